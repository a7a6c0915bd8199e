"""`python -m app.training --job-dir DIR`: train the job in DIR, reporting events on stdout.

stdout carries the events and nothing else (see channel); everything else a library prints goes
to stderr. SIGTERM (or Ctrl+C) cancels: the current step finishes, a checkpoint is written and
`finished` says `cancelled`. A frozen build runs the same through `app --run-training`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from app.errors import KnownError
from app.events import ErrorEvent
from app.jobs.spec import SPEC_FILE, TrainingSpec, load_spec
from app.training.channel import (
    EVENTS_FILE,
    ChannelLogHandler,
    EventChannel,
    StopRequest,
    claim_stdout,
    watch_reader,
)
from app.training.errors import EXIT_KNOWN, error_event, exit_status

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def main(argv: list[str] | None = None) -> int:
    """Run the training subprocess with `argv` (default: sys.argv[1:]); return its status."""
    job_dir = Path(_arguments(argv).job_dir)
    stop = StopRequest()
    events = job_dir / EVENTS_FILE if job_dir.is_dir() else None
    channel = EventChannel(claim_stdout(), events, stop)
    _cancel_on_signals(stop)
    watch_reader(channel)
    _log_to(channel)
    try:
        return _run(job_dir, channel, stop)
    finally:
        logging.shutdown()
        channel.close()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.training", description=__doc__)
    parser.add_argument("--job-dir", required=True, help="the job folder, holding spec.json")
    return parser.parse_args(argv)


def _run(job_dir: Path, channel: EventChannel, stop: StopRequest) -> int:
    try:
        spec = load_spec(job_dir / SPEC_FILE)
    except KnownError as error:
        channel.emit(error_event(error))
        return EXIT_KNOWN
    _limit_threads(spec)
    try:
        from app.training.runner import run_training
    except ImportError as error:
        return _missing_dependency(channel, error)
    _quiet_libraries()
    return run_training(spec, job_dir, channel, stop)


def _limit_threads(spec: TrainingSpec) -> None:
    # Native thread pools read these when they start, so they must be set before torch loads.
    if spec.threads is not None:
        for name in _THREAD_VARIABLES:
            os.environ[name] = str(spec.threads)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _missing_dependency(channel: EventChannel, error: ImportError) -> int:
    event = ErrorEvent(
        kind="missing_dependency",
        message=f"training needs {error.name or 'a package'} and it is not installed: install the "
        "app's training extra, pip install 'model-training-manager[train]'.",
    )
    channel.emit(event)
    return exit_status(event)


def _cancel_on_signals(stop: StopRequest) -> None:
    def cancel(_number: int, _frame: object) -> None:
        stop.request("cancelled")

    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), cancel)


def _log_to(channel: EventChannel) -> None:
    """Every log record (and every warning) of at least INFO becomes a `log` event."""
    root = logging.getLogger()
    root.handlers[:] = [ChannelLogHandler(channel)]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each warning once per place, not as an error


def _quiet_libraries() -> None:
    """transformers prints through its own handler and progress bars: route it through ours."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()  # type: ignore[no-untyped-call]
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
