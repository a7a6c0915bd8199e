"""The typed events a training subprocess reports, one JSON object per line.

The trainer writes them (`dump_event`) and the workers that supervise it read them back
(`parse_event`); both sides use these models, so the protocol is defined once. A run's last event
is either `finished` (completed, cancelled or interrupted) or `error`. Fields beyond those in
DESIGN.md have defaults, so a line written by an older trainer still parses.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.errors import BadInputError

FinishedStatus = Literal["completed", "cancelled", "interrupted"]
ErrorKind = Literal[
    "bad_spec",  # the spec file is missing or invalid
    "model_not_found",  # the base model cannot be found or read
    "dataset_unreadable",  # the records or the split cannot be read, or hold nothing to train
    "missing_dependency",  # a package the method needs is not installed
    "device_unavailable",  # the device asked for is not on this machine
    "out_of_memory",  # the run did not fit in the device's memory
    "internal",  # a bug: the traceback says where
]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Event(BaseModel):
    # Unknown fields are ignored so that a newer trainer's lines still parse in an older reader.
    model_config = ConfigDict(extra="ignore", frozen=True)

    time: float = Field(default_factory=time.time, description="Unix time of the event.")


class StartedEvent(_Event):
    """Training is about to begin: the model is loaded and the data tokenised."""

    event: Literal["started"] = "started"
    total_steps: int
    resume_step: int = 0
    device: str
    method: str = ""
    dtype: str = ""
    train_examples: int = 0
    eval_examples: int = 0
    truncated_examples: int = 0
    skipped_examples: int = 0
    trainable_parameters: int = 0
    total_parameters: int = 0
    gradient_checkpointing: bool = False


class ProgressEvent(_Event):
    """Training moved on; `loss` is the mean over the steps since the previous progress event."""

    event: Literal["progress"] = "progress"
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float | None = None
    tokens_per_second: float
    eta_seconds: float


class EvalEvent(_Event):
    """The loss on the validation split at `step`."""

    event: Literal["eval"] = "eval"
    step: int
    eval_loss: float


class CheckpointEvent(_Event):
    """A resumable checkpoint was written; `path` is relative to the job folder."""

    event: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str


class LogEvent(_Event):
    """A log line of the trainer or one of its libraries."""

    event: Literal["log"] = "log"
    level: LogLevel = "info"
    message: str


class Summary(BaseModel):
    """What a run did, written to the job's `summary.json` and carried by `finished`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    steps: int
    total_steps: int
    epochs: float
    tokens: int = Field(description="Real (non-padding) tokens the model was trained on.")
    trained_tokens: int = Field(description="Tokens the loss was computed on.")
    train_loss: float | None = Field(description="Mean loss of the last steps.")
    eval_loss: float | None = None
    duration_seconds: float
    tokens_per_second: float
    peak_memory_mb: float | None = Field(None, description="Peak memory of the device.")
    train_examples: int = 0
    eval_examples: int = 0
    truncated_examples: int = 0
    skipped_examples: int = 0


class FinishedEvent(_Event):
    """The run ended without an error; `artifacts` maps a kind to a path in the job folder."""

    event: Literal["finished"] = "finished"
    status: FinishedStatus
    artifacts: dict[str, str] = Field(default_factory=dict)
    summary: Summary | None = None


class ErrorEvent(_Event):
    """The run failed; `message` is one sentence for the user, `traceback` is for a bug report."""

    event: Literal["error"] = "error"
    kind: ErrorKind
    message: str
    traceback: str | None = None


Event = Annotated[
    StartedEvent
    | ProgressEvent
    | EvalEvent
    | CheckpointEvent
    | LogEvent
    | FinishedEvent
    | ErrorEvent,
    Field(discriminator="event"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


class BadEventError(BadInputError):
    """A line on the channel is not a training event."""


def parse_event(line: bytes | str) -> Event:
    """The event in one line of the channel (trailing newline allowed).

    Raises BadEventError, naming what is wrong, when the line is not an event.
    """
    try:
        return _EVENT.validate_json(line)
    except ValidationError as error:
        raise BadEventError(
            f"not a training event ({_first_problem(error)}): {_head(line)}"
        ) from None


def dump_event(event: Event) -> bytes:
    """The event as one line of JSON, newline included."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True)) + b"\n"


def _first_problem(error: ValidationError) -> str:
    item = error.errors()[0]
    where = ".".join(str(part) for part in item["loc"])
    return f"{where}: {item['msg']}" if where else str(item["msg"])


def _head(line: bytes | str, limit: int = 120) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
