"""The training spec: everything a run needs, validated before the trainer starts.

A job folder holds it as `spec.json`; `python -m app.training --job-dir DIR` reads it from there.
Relative paths in it are relative to that folder, so a job folder can be moved whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import BadInputError
from app.settings import Hyperparameters, Method, field_errors

SPEC_FILE = "spec.json"
Device = Literal["auto", "cpu", "cuda", "mps"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSource(_Strict):
    """An imported dataset's files (see app.datasets)."""

    records: Path = Field(description="The canonical records, records.jsonl.")
    split: Path | None = Field(
        None, description="Its split.json; without one, eval_fraction and seed decide the split."
    )


class TrainingHyperparameters(Hyperparameters):
    """The settings' hyperparameters and the finer controls a job may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=4096, description="Micro-batches each step's batch is split into."
    )
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off.")
    eval_steps: int = Field(100, ge=1, description="Steps between evaluations.")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Checkpoints kept, newest first.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together.")
    padding: Literal["longest", "max_length"] = "longest"
    packing: bool = Field(False, description="Pack several examples into each sequence.")
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    lora_target_modules: list[str] | None = Field(
        None, description="Module names LoRA adapts; default: attention and MLP projections."
    )

    @model_validator(mode="after")
    def _check_accumulation(self) -> Self:
        if self.gradient_accumulation_steps > self.batch_size:
            raise ValueError("gradient_accumulation_steps must not exceed batch_size")
        return self


class OutputOptions(_Strict):
    merge: bool = Field(False, description="Also write merged full weights to merged/.")


class TrainingSpec(_Strict):
    """One training run."""

    version: Literal[1] = 1
    base_model: str = Field(
        min_length=1, description="A Hugging Face id, a local model folder or a .gguf file."
    )
    dataset: DatasetSource
    hyperparameters: TrainingHyperparameters = Field(default_factory=TrainingHyperparameters)
    device: Device = "auto"
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads torch may use.")
    output: OutputOptions = Field(default_factory=OutputOptions)
    model_cache: Path | None = Field(
        None, description="Where converted GGUF bases are kept; default: <data folder>/models."
    )
    resume: bool = Field(True, description="Continue from the newest checkpoint in the folder.")
    target: str | None = Field(
        None, description="The cluster the job runs on (see `mtm clusters`); None: this machine."
    )

    @property
    def method(self) -> Method:
        return self.hyperparameters.method


def load_spec(path: Path) -> TrainingSpec:
    """Read and validate the spec at `path`; relative paths in it resolve against its folder.

    Raises BadInputError with one sentence naming the file and, when invalid, the field.
    """
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as error:
        raise BadInputError(f"The job spec {path} cannot be read ({error.strerror}).") from None
    except orjson.JSONDecodeError as error:
        raise BadInputError(f"The job spec {path} is not valid JSON ({error}).") from None
    try:
        spec = TrainingSpec.model_validate(data)
    except ValidationError as error:
        raise BadInputError(f"The job spec {path} is invalid: {_first_field(error)}") from None
    return _resolved(spec, path.parent)


def write_spec(spec: TrainingSpec, path: Path) -> None:
    """Write `spec` to `path` atomically, so a trainer never reads half a file."""
    handle, temporary = tempfile.mkstemp(prefix=".spec-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(orjson.dumps(spec.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _first_field(error: ValidationError) -> str:
    """`hyperparameters.epochs: must be at least 1.` for the first invalid field."""
    first = error.errors()[0]
    if first["type"] == "missing":
        return f"{_dotted(first['loc'])} is missing."
    field, sentence = next(iter(field_errors(error).items()))
    sentence = sentence[0].lower() + sentence[1:]
    return f"{field}: {sentence}" if field else sentence


def _dotted(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def _resolved(spec: TrainingSpec, folder: Path) -> TrainingSpec:
    dataset = spec.dataset
    resolved = DatasetSource(
        records=_under(folder, dataset.records),
        split=_under(folder, dataset.split) if dataset.split else None,
    )
    cache = _under(folder, spec.model_cache) if spec.model_cache else None
    return spec.model_copy(update={"dataset": resolved, "model_cache": cache})


def _under(folder: Path, path: Path) -> Path:
    return path if path.is_absolute() else folder / path
