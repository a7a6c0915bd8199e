"""The job's `working_dir` for Ray: a small, deterministic zip of the training code and the spec.

The code is app.training and every app module it imports (found by reading the imports, so the
bundle follows the code as it changes), never the window, the workers or the database layer's
migrations. Entries are sorted with a fixed time and mode, so the same code and spec always make
the same bytes; the content hash names the package (`gcs://_ray_pkg_<hash>.zip`) and a head that
already holds it is not sent it again (RAY_JOBS.md §3, "Working_dir by hand").
"""

from __future__ import annotations

import ast
import hashlib
import io
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import app

APP_ROOT = Path(app.__file__).resolve().parent
SOURCE_ROOT = APP_ROOT.parent
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
    files = {**training_sources(), BUNDLED_SPEC: spec_json, **(extra or {})}
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
