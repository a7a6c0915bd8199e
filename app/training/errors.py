"""What went wrong in a run, as the `error` event and the exit status that report it."""

from __future__ import annotations

import traceback

from app.errors import BadInputError, KnownError
from app.events import ErrorEvent, ErrorKind

EXIT_KNOWN = 3  # as the CLI: the world, not the code, is at fault
EXIT_BUG = 1
_OOM_MARKERS = (
    "out of memory",  # CUDA and MPS
    "can't allocate memory",  # the CPU allocator
    "not enough memory",  # the CPU allocator on Windows
)


class TrainingError(KnownError):
    """A known failure of a run: one sentence for the user, and its kind for the worker."""

    exit_code = EXIT_KNOWN

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


def error_event(error: BaseException, device: str = "device") -> ErrorEvent:
    """The event that reports `error`: known errors by their sentence, bugs with a traceback."""
    if isinstance(error, TrainingError):
        return ErrorEvent(kind=error.kind, message=error.message)
    if isinstance(error, BadInputError):
        return ErrorEvent(kind="bad_spec", message=error.message)
    if is_out_of_memory(error):
        return ErrorEvent(kind="out_of_memory", message=_oom_advice(device))
    text = "".join(traceback.format_exception(error))
    return ErrorEvent(kind="internal", message=_bug_sentence(error), traceback=text)


def exit_status(event: ErrorEvent) -> int:
    return EXIT_BUG if event.kind in ("internal", "out_of_memory") else EXIT_KNOWN


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    # torch.OutOfMemoryError is a RuntimeError; the CPU allocator raises a plain RuntimeError.
    return isinstance(error, RuntimeError) and any(
        marker in str(error).lower() for marker in _OOM_MARKERS
    )


def _oom_advice(device: str) -> str:
    return (
        f"the run did not fit in the {device}'s memory: lower batch_size or max_seq_length "
        "(or raise gradient_accumulation_steps to split each batch), turn "
        "gradient_checkpointing on, or use LoRA instead of full fine-tuning."
    )


def _bug_sentence(error: BaseException) -> str:
    detail = str(error).strip().splitlines()
    first = detail[0] if detail else ""
    return f"the trainer failed unexpectedly ({type(error).__name__}: {first[:300]})."
