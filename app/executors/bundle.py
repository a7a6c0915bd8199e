"""The job's `working_dir` for Ray: a small, deterministic zip of the training code and the spec.

The code is app.training and every app module it imports (found by reading the imports, so the
bundle follows the code as it changes), never the window, the workers or the database layer's
migrations. Entries are sorted with a fixed time and mode, so the same code and spec always make
the same bytes; the content hash names the package (`gcs://_ray_pkg_<hash>.zip`) and a head that
already holds it is not sent it again (RAY_JOBS.md §3, "Working_dir by hand").

A frozen build has no Python files to read (its modules are compiled into its archive), so
build.spec ships the same files as a resource, `cluster-code/`, computed by this module at build
time: the GUI-only build, which has no trainer of its own, can still send jobs to a cluster.
"""

from __future__ import annotations

import ast
import hashlib
import io
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import app
from app.executors.errors import BadClusterError
from app.paths import resource_path

APP_ROOT = Path(app.__file__).resolve().parent
SOURCE_ROOT = APP_ROOT.parent
FROZEN_CODE = "cluster-code"  # the resource folder a frozen build carries the training code in
# What a Ray job runs: the trainer, and the launcher that brings a bucket's files to it.
ENTRY_MODULES = ("app.training", "app.executors.launch")
BUNDLED_SPEC = "job/spec.json"  # the spec the job was submitted with, for the record
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
_FILE_MODE = 0o644 << 16


@dataclass(frozen=True)
class Bundle:
    """A zip ready to PUT to the head, and the URI it goes by."""

    data: bytes
    digest: str

    @property
    def uri(self) -> str:
        return f"gcs://_ray_pkg_{self.digest}.zip"

    @property
    def size(self) -> int:
        return len(self.data)


def build_bundle(spec_json: bytes, extra: Mapping[str, bytes] | None = None) -> Bundle:
    """The bundle of the training code, the spec and `extra` files (name → bytes)."""
    files = {**code_to_send(), BUNDLED_SPEC: spec_json, **(extra or {})}
    data = deterministic_zip(files)
    # 16 hex digits, as Ray names its own packages; the head does not check them.
    return Bundle(data=data, digest=hashlib.sha256(data).hexdigest()[:16])


def deterministic_zip(files: Mapping[str, bytes]) -> bytes:
    """A zip of `files` whose bytes depend on their names and contents only."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = _FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, wherever the zip was made, so the mode means the same
            archive.writestr(info, files[name], compresslevel=9)
    return buffer.getvalue()


def code_root() -> Path:
    """Where the app's Python files are read from: the source tree (or installed package), or a
    frozen build's copy of them."""
    return resource_path(FROZEN_CODE) if getattr(sys, "frozen", False) else SOURCE_ROOT


def code_to_send() -> dict[str, bytes]:
    """The training code a cluster job runs; BadClusterError when this build carries none."""
    files = training_sources(code_root())
    if "app/training/__main__.py" not in files:
        raise BadClusterError(
            "This build of Model Training Manager carries no training code to send to a cluster; "
            "build it again with `make package`, or run the app from its source."
        )
    return files


@cache
def cluster_code_available() -> bool:
    """Whether jobs can be sent to a cluster from this build (one look at a file, once)."""
    return (code_root() / "app" / "training" / "__main__.py").is_file()


def training_sources(
    root: Path = SOURCE_ROOT, entries: Iterable[str] = ENTRY_MODULES
) -> dict[str, bytes]:
    """`app/…/x.py` → source, for the entry modules (and packages) and what they import."""
    index = _module_index(root)
    wanted = [name for entry in entries for name in index if _within(name, entry)]
    found: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in found:
            continue
        found.add(name)
        wanted.extend(_parents(name))
        wanted.extend(_app_imports(index[name], index))
    return {index[name].relative_to(root).as_posix(): index[name].read_bytes() for name in found}


def _module_index(root: Path) -> dict[str, Path]:
    """Every module of the app package by dotted name (a package by its __init__.py)."""
    index: dict[str, Path] = {}
    for path in (root / "app").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts or "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        index[name] = path
    return index


def _app_imports(path: Path, index: Mapping[str, Path]) -> list[str]:
    """The app modules `path` imports, at the top or inside functions."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            # `from app.executors import errors` imports a module, not only a name.
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return [name for name in modules if name in index]


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")
