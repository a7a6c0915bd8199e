"""One worker: a QRunnable that supervises one training subprocess from start to finish.

It starts the trainer, reads its event lines continuously (so a full pipe never stalls
training), turns them into typed events, writes them to the database in small batches (about two
writes a second), and emits signals. The trainer's stderr goes to `stderr.log` in the job folder.
Cancel sends SIGTERM; a trainer that has not finished after the grace period is killed with its
whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

from PySide6.QtCore import QObject, QRunnable, Signal

from app.db.session import Database
from app.events import BadEventError, ErrorEvent, Event, FinishedEvent, parse_event
from app.jobs.lifecycle import JobStatus
from app.jobs.service import apply_events, finish_job, record_trainer
from app.jobs.spec import SPEC_FILE, load_spec, write_spec
from app.paths import self_command

log = logging.getLogger(__name__)

TRAINER_FLAG = "--run-training"
STDERR_FILE = "stderr.log"
WRITE_INTERVAL_S = 0.5
GRACE_PERIOD_S = 60.0  # a checkpoint of a big model can take a while to write
_STDERR_TAIL_BYTES = 2000


class RunnerSignals(QObject):
    """job_event(job_id, Event), finished(job_id, status)."""

    job_event = Signal(str, object)
    finished = Signal(str, str)


class EventBatch:
    """A run's events, written to the database in batches: at most one write every
    WRITE_INTERVAL_S while events come, and the rest on `flush`, not one write per event."""

    def __init__(self, write: Callable[[list[Event]], None]) -> None:
        self._write = write
        self._events: list[Event] = []
        self._last_write = time.monotonic()

    def add(self, event: Event) -> None:
        self._events.append(event)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_write >= WRITE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        events, self._events = self._events, []
        if events:
            self._write(events)
        self._last_write = time.monotonic()


def record_end(
    database: Database,
    job_id: str,
    reason: JobStatus | None,
    finished: FinishedEvent | None,
    failure: str | None,
) -> str:
    """Record how a run ended, given why it was asked to stop (None: it was not); its status."""
    if reason is not None and finished is None:
        # Asked to stop, it did not say it had: it was killed after the grace period.
        finished = FinishedEvent(status=reason.value)
        failure = None
        log.warning("the run was killed after the grace period", extra={"job": job_id})
    elif reason is JobStatus.INTERRUPTED and finished is not None:
        # Stopped because the app quit: it resumes from its checkpoint next time.
        finished = finished.model_copy(update={"status": "interrupted"})
    return finish_job(database, job_id, finished, failure).status


def trainer_command(folder: Path) -> list[str]:
    """The trainer subprocess for the job in `folder`: this app again, with a flag."""
    return self_command(TRAINER_FLAG, "--job-dir", str(folder))


TrainerCommand = Callable[[Path], list[str]]


class JobRunner(QRunnable):
    """Runs the trainer for one claimed job."""

    def __init__(
        self,
        database: Database,
        job_id: str,
        folder: Path,
        threads: int,
        signals: RunnerSignals,
        *,
        command: TrainerCommand = trainer_command,
        environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._command = command
        self._environment = environment or {}
        self.job_id = job_id
        self.signals = signals
        self._database = database
        self._folder = folder
        self._threads = threads
        self._process: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()
        self._stop_reason: JobStatus | None = None
        self._lock = threading.Lock()
        self.setAutoDelete(False)

    # --- control, from any thread ------------------------------------------------------------

    def stop(
        self, reason: JobStatus = JobStatus.CANCELLED, grace_s: float = GRACE_PERIOD_S
    ) -> None:
        """Ask the trainer to checkpoint and stop; kill it if it has not after `grace_s`."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
            process = self._process
        if process is None or process.poll() is not None:
            return
        _signal(process, signal.SIGTERM)
        killer = threading.Timer(grace_s, _kill_group, args=(process,))
        killer.daemon = True
        killer.start()

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            finished, failure = self._supervise()
        except Exception as error:  # a bug here must not leave the job running forever
            log.exception("worker failed", extra={"job": self.job_id})
            finished, failure = None, f"The worker failed ({type(error).__name__}: {error})."
        status = JobStatus.FAILED.value
        try:
            status = self._record_end(finished, failure)
        except Exception:  # the database refused the write: the slot must still free
            log.exception("could not record the end of the job", extra={"job": self.job_id})
        finally:
            self.signals.finished.emit(self.job_id, status)

    def _supervise(self) -> tuple[FinishedEvent | None, str | None]:
        self._set_threads()
        with (self._folder / STDERR_FILE).open("ab") as stderr:
            process = self._spawn(stderr)
            record_trainer(self._database, self.job_id, process.pid)
            assert process.stdout is not None
            with process.stdout:  # closed here, not whenever the garbage collector gets to it
                finished, error = self._follow(process.stdout)
            code = process.wait()
        if finished is not None:
            return finished, None
        return None, self._failure_sentence(code, error)

    def _spawn(self, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        environment = {**os.environ, "OMP_NUM_THREADS": str(self._threads), **self._environment}
        process = subprocess.Popen(
            self._command(self._folder),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=self._folder,
            env=environment,
            start_new_session=sys.platform != "win32",  # its own group, to kill it whole
        )
        with self._lock:
            self._process = process
            stop_now = self._stop_reason is not None
        if stop_now:  # cancelled while it was starting
            _signal(process, signal.SIGTERM)
        return process

    def _follow(self, stdout: IO[bytes]) -> tuple[FinishedEvent | None, ErrorEvent | None]:
        """Read every event line until the trainer closes its end."""
        finished: FinishedEvent | None = None
        error: ErrorEvent | None = None
        batch = EventBatch(partial(apply_events, self._database, self.job_id))
        for line in stdout:
            event = self._parse(line)
            if event is None:
                continue
            finished = event if isinstance(event, FinishedEvent) else finished
            error = event if isinstance(event, ErrorEvent) else error
            self.signals.job_event.emit(self.job_id, event)
            batch.add(event)
        batch.flush()
        return finished, error

    def _parse(self, line: bytes) -> Event | None:
        try:
            return parse_event(line)
        except BadEventError:
            log.warning(
                "the trainer wrote a line that is not an event",
                extra={"job": self.job_id, "line": line[:500].decode(errors="replace")},
            )
            return None

    def _failure_sentence(self, code: int, error: ErrorEvent | None) -> str:
        if error is not None:
            return error.message
        tail = _tail(self._folder / STDERR_FILE)
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        return f"The trainer stopped without finishing (exit code {code}; last output: {last})."

    def _record_end(self, finished: FinishedEvent | None, failure: str | None) -> str:
        return record_end(self._database, self.job_id, self._stop_reason, finished, failure)

    def _set_threads(self) -> None:
        spec_path = self._folder / SPEC_FILE
        spec = load_spec(spec_path)
        if spec.threads != self._threads:
            write_spec(spec.model_copy(update={"threads": self._threads}), spec_path)


def _signal(process: subprocess.Popen[bytes], number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(number)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    log.warning("the trainer did not stop in time; killing it", extra={"pid": process.pid})
    with contextlib.suppress(ProcessLookupError):
        if sys.platform == "win32":
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - _STDERR_TAIL_BYTES))
            return file.read().decode(errors="replace")
    except OSError:
        return ""
