"""The frozen app, as users get it: the PyInstaller bundles, the .deb and the .tar.gz (Linux).

Each bundle is built once per session into build/ and dist/ (packaging/build.py, as `make
package` does; PyInstaller's cache in build/ makes a rebuild quicker) and then run as a user
would run it: no Python, no PYTHONPATH, a fresh data folder, offscreen. CI runs these; a
developer in a hurry skips them with `make test-fast` or MTM_SKIP_PACKAGING=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REAL_DATA, REPO_ROOT
from tests.training_fixtures import tiny_model  # noqa: F401  (fixture)

FROZEN_MARKS = (
    pytest.mark.packaging,
    pytest.mark.skipif(
        os.environ.get("MTM_SKIP_PACKAGING") == "1",
        reason="MTM_SKIP_PACKAGING=1: the packaging checks are skipped (CI runs them)",
    ),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="the packaging checks run on Linux; the CI workflow builds the other installers",
    ),
)

APP_NAME = "Model Training Manager"
GUI_BUDGET_BYTES = 200 * 10**6
FULL_BUDGET_BYTES = int(1.3 * 10**9)
BUILD_TIMEOUT_S = 1500


def frozen(test: Any) -> Any:
    """Marks a test that needs a bundle: `packaging`, skipped off Linux and on request."""
    for mark in FROZEN_MARKS:
        test = mark(test)
    return test


def build(kind: str) -> dict[str, Any]:
    """packaging/build.py for `kind`; its JSON summary (paths and sizes). MTM_REUSE_BUNDLES=1
    takes the bundles already in dist/ instead, for a developer rerunning these checks."""
    previous = REPO_ROOT / "dist" / kind / "build-summary.json"
    if os.environ.get("MTM_REUSE_BUNDLES") == "1" and previous.is_file():
        reused: dict[str, Any] = json.loads(previous.read_text())
        return reused
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "packaging" / "build.py"), "--build", kind],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="session")
def full_build() -> dict[str, Any]:
    return build("full")


@pytest.fixture(scope="session")
def gui_build() -> dict[str, Any]:
    return build("gui")


def frozen_env(home: Path) -> dict[str, str]:
    """What a user's session would have: none of this checkout's Python settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "MTM_"))
    }
    env.update(QT_QPA_PLATFORM="offscreen", MTM_HOME=str(home), HF_HUB_OFFLINE="1")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    return env


def run_frozen(
    command: list[str], home: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,  # not the checkout: nothing may be imported from the source tree
        env=frozen_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def executable(summary: dict[str, Any]) -> Path:
    return Path(summary["bundle"]) / APP_NAME


def installer(summary: dict[str, Any], suffix: str) -> Path:
    return next(Path(p) for p in summary["installers"] if p.endswith(suffix))


def assert_smoke(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["event"] == "first_paint"
    assert report["heavy_modules"] == []
    assert result.stderr.strip() == ""  # no warnings, no missing-module tracebacks


@frozen
def test_full_bundle_runs_smoke_offscreen_with_nothing_on_stderr(full_build, tmp_path):
    result = run_frozen([str(executable(full_build)), "--smoke"], tmp_path / "home", tmp_path)
    assert_smoke(result)
    assert (tmp_path / "home" / "mtm.sqlite3").is_file()  # the migrations ran frozen


@frozen
def test_the_frozen_hardware_probe_reports_torch(full_build, tmp_path):
    """The welcome panel and About box ask the executable itself, as `--run-hardware`."""
    result = run_frozen(
        [str(executable(full_build)), "--run-hardware"], tmp_path / "home", tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"] and report["cpu_cores"] >= 1


@frozen
def test_full_bundle_carries_its_resources_and_the_training_stack(full_build):
    internal = Path(full_build["bundle"]) / "_internal"
    for size in (16, 48, 256, 512):
        assert (internal / "resources" / "icons" / f"app-{size}.png").is_file()
    assert json.loads((internal / "app" / "build.json").read_text())["build"] == "full"
    for distribution in ("transformers", "peft", "huggingface_hub", "torch", "tokenizers"):
        assert list(internal.glob(f"{distribution}-*.dist-info")), distribution
    assert (internal / "huggingface_hub" / "templates" / "modelcard_template.md").is_file()
    # The welcome panel's sample and the user guide of Help → User guide.
    assert (internal / "resources" / "samples" / "getting-started.jsonl").is_file()
    assert (internal / "README.md").is_file()
    assert not (internal / "PySide6" / "Qt" / "lib" / "libQt6WebEngineCore.so.6").exists()
    assert full_build["bundle_bytes"] < FULL_BUDGET_BYTES, full_build["bundle_bytes"]


def test_app_code_never_reads_meipass():
    """Resources go through app.paths.resource_path, in a checkout and frozen alike."""
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("app", "ui")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if "_MEIPASS" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


@frozen
def test_frozen_cli_imports_a_real_dataset_and_trains_a_lora_job(
    full_build,
    tmp_path,
    tiny_model,  # noqa: F811
):
    exe, home = str(executable(full_build)), tmp_path / "home"

    def mtm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = run_frozen([exe, *args], home, tmp_path, timeout)
        assert result.returncode == 0, f"{args}: {result.stderr[-4000:]}"
        return result

    dataset = json.loads(
        mtm("datasets", "import", str(REAL_DATA / "identity.json"), "--json").stdout
    )
    assert (dataset["format"], dataset["rows"]) == ("alpaca", 91)
    created = mtm(
        "jobs", "create", "--dataset", dataset["id"], "--base-model", str(tiny_model),
        "--method", "lora", "--epochs", "1", "--batch-size", "4", "--max-seq-length", "64",
        "--max-steps", "4", "--save-steps", "1000", "--json",
    )  # fmt: skip
    job = json.loads(created.stdout)
    # The worker starts the frozen executable itself as the trainer: no Python is involved.
    mtm("worker", "run", "--until-idle", timeout=900)
    shown = json.loads(mtm("jobs", "show", job["id"], "--json").stdout)
    assert shown["status"] == "completed", shown["error"]
    adapter = Path(shown["job_dir"]) / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"


@frozen
def test_deb_unpacks_and_its_launcher_starts_the_app(full_build, tmp_path):
    deb = installer(full_build, ".deb")
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Package: model-training-manager\n" in fields
    assert f"Version: {full_build['version']}" in fields
    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    assert (root / "usr" / "share" / "applications" / "model-training-manager.desktop").is_file()
    for size in (16, 32, 48, 128, 256, 512):
        icon = f"usr/share/icons/hicolor/{size}x{size}/apps/model-training-manager.png"
        assert (root / icon).is_file(), icon
    assert (root / "opt" / "model-training-manager" / APP_NAME).is_file()
    launcher = root / "usr" / "bin" / "model-training-manager"
    result = run_frozen([str(launcher), "--smoke"], tmp_path / "home", tmp_path)
    assert_smoke(result)


@frozen
def test_tarball_holds_the_one_folder_app(full_build):
    import tarfile

    with tarfile.open(installer(full_build, ".tar.gz")) as archive:
        names = set(archive.getnames())
    assert f"{APP_NAME}/{APP_NAME}" in names
    assert f"{APP_NAME}/_internal/resources/icons/app-256.png" in names


@frozen
def test_gui_only_bundle_has_no_training_stack_and_still_starts(gui_build, full_build, tmp_path):
    internal = Path(gui_build["bundle"]) / "_internal"
    assert not (internal / "torch").exists()
    assert not list(internal.glob("transformers*"))
    assert json.loads((internal / "app" / "build.json").read_text())["build"] == "gui"
    assert gui_build["bundle_bytes"] * 2 < full_build["bundle_bytes"]
    home = tmp_path / "home"
    assert_smoke(run_frozen([str(executable(gui_build)), "--smoke"], home, tmp_path))
    # A Parquet file: pyarrow, trimmed and stripped by build.spec, still loads and reads it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "facts.parquet"
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    command = [str(executable(gui_build)), "datasets", "import", str(parquet), "--json"]
    imported = run_frozen(command, home, tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert (json.loads(imported.stdout)["format"], json.loads(imported.stdout)["rows"]) == (
        "alpaca",
        12,
    )


@frozen
@pytest.mark.xfail(
    strict=True,
    reason="known gap: the GUI-only bundle is about 320 MB, over its 200 MB budget: Qt with "
    "ICU (87 MB), pyarrow for Parquet (80 MB), numpy with OpenBLAS (42 MB) and cryptography "
    "for the keyring (14 MB); see bench/RESULTS.md and README.md, Packaging",
)
def test_gui_only_bundle_is_within_its_size_budget(gui_build):
    assert gui_build["bundle_bytes"] < GUI_BUDGET_BYTES, gui_build["bundle_bytes"]


def test_the_new_job_dialog_of_the_gui_only_build_says_training_needs_the_full_build(
    qtbot, context, tmp_path, monkeypatch
):
    """Frozen without torch, the dialog says why it cannot queue, and its Queue button stays
    off even with the form complete (here the check is made to answer as that build does)."""
    import ui.new_job_dialog as dialog_module
    from app.datasets.importer import ImportOptions, import_dataset
    from ui.main_window import MainWindow

    monkeypatch.setattr(dialog_module, "training_available", lambda: False)
    import_dataset(
        context.database, context.home, REAL_DATA / "identity.json", ImportOptions(name="ids")
    )
    window = MainWindow(context, start_workers=False)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    tab = window.jobs_tab
    qtbot.waitUntil(lambda: tab.loaded, timeout=10_000)
    window.tabs.setCurrentWidget(tab)
    tab.new_button.click()
    dialog = tab.dialog
    assert isinstance(dialog, dialog_module.NewJobDialog)
    qtbot.waitUntil(lambda: dialog.loaded, timeout=10_000)
    assert dialog.build_note.isVisible()
    assert dialog.build_note.text().startswith(
        "Training needs the full build of Model Training Manager; this is the GUI-only build."
    )
    dialog.base_model_combo.setCurrentText(str(tmp_path))
    dialog.on_form_changed()
    assert dialog.dataset_id is not None and dialog.validate() == {}
    assert not dialog.create_button.isEnabled()
    dialog.reject()
    assert window.runner.shutdown(), "background work did not finish"
