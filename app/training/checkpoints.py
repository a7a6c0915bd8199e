"""Resumable checkpoints: `checkpoints/step-N/`, the newest few kept.

Each holds the trainable weights (`trainable.safetensors`: the adapter, or every weight for a
full fine-tune), the optimiser, the scheduler and the random number generators
(`training_state.pt`), and the run's counters (`state.json`). The sampler needs no state of its
own: its position is the step (see batching). A checkpoint is written into a hidden folder and
renamed into place, so a folder named `step-N` is always complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors.torch import load_file, save_file

from app.jobs.spec import TrainingSpec
from app.training.errors import TrainingError

CHECKPOINTS_DIR = "checkpoints"
_PREFIX = "step-"
_WEIGHTS = "trainable.safetensors"
_TRAINING_STATE = "training_state.pt"
_STATE = "state.json"
# Settings that change when checkpoints are written or evaluations run, not what is learnt.
_SCHEDULE_ONLY = {"save_steps", "eval_steps", "keep_checkpoints"}


@dataclass
class RunState:
    """The counters a resumed run continues from."""

    step: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    recent_losses: list[float] = field(default_factory=list)
    eval_loss: float | None = None
    train_seconds: float = 0.0  # in steps only
    elapsed_seconds: float = 0.0  # wall time of the job, start-ups and evaluations included


@dataclass(frozen=True)
class Trainables:
    """What a checkpoint saves and restores besides the counters."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def fingerprint(spec: TrainingSpec) -> str:
    """Identifies what a run learns; a checkpoint only resumes a run with the same one."""
    data = spec.model_dump(
        mode="json",
        include={"base_model", "dataset", "hyperparameters"},
        exclude={"hyperparameters": _SCHEDULE_ONLY},
    )
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def save_checkpoint(job_dir: Path, state: RunState, parts: Trainables, spec: TrainingSpec) -> str:
    """Write the checkpoint of `state.step`, drop the oldest beyond the spec's limit, and
    return its path relative to `job_dir`."""
    folder = job_dir / CHECKPOINTS_DIR
    folder.mkdir(exist_ok=True)
    name = f"{_PREFIX}{state.step}"
    staging = folder / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write(staging, state, parts, fingerprint(spec))
    shutil.rmtree(folder / name, ignore_errors=True)
    os.rename(staging, folder / name)
    _prune(folder, spec.hyperparameters.keep_checkpoints)
    return f"{CHECKPOINTS_DIR}/{name}"


def _write(staging: Path, state: RunState, parts: Trainables, identity: str) -> None:
    weights = {
        name: parameter.detach().to("cpu").contiguous()
        for name, parameter in parts.model.named_parameters()
        if parameter.requires_grad
    }
    save_file(weights, str(staging / _WEIGHTS))
    training = {
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "rng": _rng_state(),
    }
    torch.save(training, staging / _TRAINING_STATE)
    document = {"fingerprint": identity, **asdict(state)}
    (staging / _STATE).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def checkpoints(job_dir: Path) -> list[Path]:
    """The complete checkpoints in `job_dir`, oldest first."""
    folder = job_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _step_of(p) is not None]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def restore(path: Path, parts: Trainables, spec: TrainingSpec) -> RunState:
    """Load the checkpoint at `path` into `parts`; return its counters."""
    document = orjson.loads((path / _STATE).read_bytes())
    if document.pop("fingerprint", None) != fingerprint(spec):
        raise TrainingError(
            "bad_spec",
            f"the checkpoints in {path.parent} were made with other settings than this spec: "
            f"delete that folder to start over, or restore the spec they were made with.",
        )
    _load_weights(parts.model, load_file(str(path / _WEIGHTS)))
    training = torch.load(path / _TRAINING_STATE, weights_only=True)
    parts.optimizer.load_state_dict(training["optimizer"])
    parts.scheduler.load_state_dict(training["scheduler"])
    _set_rng_state(training["rng"])
    return RunState(**document)


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def _prune(folder: Path, keep: int) -> None:
    for old in checkpoints(folder.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _step_of(path: Path) -> int | None:
    number = path.name.removeprefix(_PREFIX)
    return int(number) if path.name.startswith(_PREFIX) and number.isdigit() else None
