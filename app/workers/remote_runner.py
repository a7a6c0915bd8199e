"""One remote worker: a QRunnable that runs one claimed job on its cluster from start to finish.

Like JobRunner for a local trainer, and with the same signals, so the pool and the window treat
both alike: it submits the job to the cluster its spec names, follows the run's events (emitting
each, writing them to the database in batches), copies the results into the job's folder, and
records how the run ended. Cancel asks the cluster to checkpoint and stop the run.

A remote run outlives the app: `stop(INTERRUPTED)` (the app quits) only stops following. The job
stays running in the database and on the cluster; the next start reconciles it with the head and
follows it again (`follow_only`), skipping the events recorded so far (REMOTE_STATE_FILE).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from PySide6.QtCore import QRunnable

from app.db.session import Database
from app.errors import KnownError
from app.events import ErrorEvent, Event, FinishedEvent, dump_event
from app.executors.base import Executor
from app.executors.remote_jobs import ExecutorFactory, close_executor
from app.jobs.lifecycle import JobStatus
from app.jobs.service import apply_events, get_job
from app.jobs.spec import SPEC_FILE, TrainingSpec, load_spec
from app.workers.runner import GRACE_PERIOD_S, EventBatch, RunnerSignals, record_end

log = logging.getLogger(__name__)

REMOTE_STATE_FILE = "remote.json"  # the attempt submitted, and how many of its events are in
EVENTS_FILE = "events.jsonl"  # a copy of the run's events as they come, for the job's log view
FOLLOWERS = 8  # remote jobs followed at once; each is a thread waiting on a socket, not a CPU
_POLL_S = 0.2  # how often a follower waiting for the next event checks whether to let go


@dataclass(frozen=True)
class RemoteProgress:
    """The job's attempt last submitted, and how many of that run's events are recorded."""

    attempt: int
    events: int


def read_progress(folder: Path) -> RemoteProgress | None:
    try:
        data = orjson.loads((folder / REMOTE_STATE_FILE).read_bytes())
        return RemoteProgress(int(data["attempt"]), int(data["events"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # never submitted (or the file was damaged: the run starts over)


def _write_progress(folder: Path, progress: RemoteProgress) -> None:
    path = folder / REMOTE_STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps({"attempt": progress.attempt, "events": progress.events}))
    temporary.replace(path)  # whole or not at all: a crash mid-write must not lose the count


Outcome = tuple[FinishedEvent | None, str | None]  # the finished event, or why there was none


@dataclass(frozen=True)
class _End:
    """The follow stream ended, or failed with `error`."""

    error: Exception | None = None


def _pump(events: Iterator[Event], into: queue.Queue[Event | _End]) -> None:
    """On a daemon thread: a blocking read of the log socket cannot be interrupted, so the
    runner waits on this queue instead, and can stop waiting when the app quits."""
    try:
        for event in events:
            into.put(event)
    except Exception as error:
        into.put(_End(error))
    else:
        into.put(_End())


class RemoteRunner(QRunnable):
    """Runs one claimed job on its cluster; or, `follow_only`, follows a run submitted before
    the app restarted."""

    def __init__(
        self,
        database: Database,
        job_id: str,
        folder: Path,
        signals: RunnerSignals,
        *,
        executors: ExecutorFactory,
        follow_only: bool = False,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.signals = signals
        self._database = database
        self._folder = folder
        self._executors = executors
        self._follow_only = follow_only
        self._stop_reason: JobStatus | None = None
        self._executor: Executor | None = None  # set once the run is on the cluster
        self._let_go = threading.Event()
        self._lock = threading.Lock()
        self._progress = RemoteProgress(0, 0)
        self.setAutoDelete(False)

    # --- control, from any thread ------------------------------------------------------------

    def stop(
        self, reason: JobStatus = JobStatus.CANCELLED, grace_s: float = GRACE_PERIOD_S
    ) -> None:
        """Cancelled: ask the cluster to checkpoint and stop the run (the cluster's own grace
        period applies, so `grace_s` does not). Interrupted (the app quits): stop following;
        the run goes on, and the next start follows it again."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
            executor = self._executor
        if reason is JobStatus.INTERRUPTED:
            self._let_go.set()
        elif executor is not None:
            self._cancel_in_background(executor)

    def _cancel_in_background(self, executor: Executor) -> None:
        # A request to the head can take seconds; stop() is called on the GUI thread.
        name = f"mtm-cancel-{self.job_id}"
        threading.Thread(target=self._cancel, args=(executor,), name=name, daemon=True).start()

    def _cancel(self, executor: Executor) -> None:
        try:
            stopped = executor.cancel(self.job_id)
        except Exception:  # the run goes on; cancelling again tries again
            log.warning(
                "could not cancel the remote run", extra={"job": self.job_id}, exc_info=True
            )
            return
        log.info("remote run cancelled", extra={"job": self.job_id, "was_running": stopped})

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            outcome = self._supervise()
        except KnownError as error:  # the cluster or its storage said no, in one sentence
            outcome = None, error.message
        except Exception as error:  # a bug here must not leave the job running forever
            log.exception("remote worker failed", extra={"job": self.job_id})
            outcome = None, f"The worker failed ({type(error).__name__}: {error})."
        status = JobStatus.FAILED.value if outcome is not None else JobStatus.RUNNING.value
        try:
            if outcome is not None:
                status = record_end(self._database, self.job_id, self._stop_reason, *outcome)
        except Exception:  # the database refused the write: the entry must still free
            log.exception("could not record the end of the job", extra={"job": self.job_id})
        finally:
            self.signals.finished.emit(self.job_id, status)

    def _supervise(self) -> Outcome | None:
        """How the run ended; None when it was let go while still running."""
        spec = load_spec(self._folder / SPEC_FILE)
        if spec.target is None:
            return None, f"Job {self.job_id} names no cluster to run on."
        executor = self._executors(spec.target)
        try:
            skip = self._start(executor, spec)
            if skip is None:
                return None, None  # stopped before it was submitted: recorded as the reason
            ended = self._follow(executor, skip)
            return None if ended is None else self._conclude(executor, *ended)
        finally:
            with self._lock:
                self._executor = None
            close_executor(executor)

    def _start(self, executor: Executor, spec: TrainingSpec) -> int | None:
        """Submit the run (unless following one already there); the events to skip, or None
        when stopped before the run was submitted."""
        progress = read_progress(self._folder)
        if self._follow_only:
            self._progress = progress or RemoteProgress(
                get_job(self._database, self.job_id).attempt, 0
            )
        else:
            with self._lock:
                if self._stop_reason is not None:
                    return None
            attempt = get_job(self._database, self.job_id).attempt
            # A retry (a new attempt) or a first start begins afresh; a resume continues from
            # the checkpoint in the cluster's storage.
            fresh = not spec.resume or progress is None or progress.attempt != attempt
            executor.submit(self.job_id, spec, fresh=fresh)
            self._progress = RemoteProgress(attempt, 0)
            _write_progress(self._folder, self._progress)
            log.info("remote run submitted", extra={"job": self.job_id, "fresh": fresh})
        with self._lock:
            self._executor = executor
            cancel_now = self._stop_reason is JobStatus.CANCELLED  # while it was submitting
        if cancel_now:
            self._cancel_in_background(executor)
        return self._progress.events

    def _follow(self, executor: Executor, skip: int) -> Outcome | None:
        """Every event of the run after the first `skip`; None when let go first."""
        events: queue.Queue[Event | _End] = queue.Queue()
        stream = executor.follow(self.job_id, skip=skip)
        name = f"mtm-follow-{self.job_id}"
        threading.Thread(target=_pump, args=(stream, events), name=name, daemon=True).start()
        finished: FinishedEvent | None = None
        error: ErrorEvent | None = None
        batch = EventBatch(self._write)
        try:
            while not self._let_go.is_set():
                try:
                    item = events.get(timeout=_POLL_S)
                except queue.Empty:
                    batch.flush_if_due()  # events are written even while none follow
                    continue
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return _outcome(finished, error)
                finished = item if isinstance(item, FinishedEvent) else finished
                error = item if isinstance(item, ErrorEvent) else error
                self.signals.job_event.emit(self.job_id, item)
                batch.add(item)
            log.info("stopped following; the run goes on", extra={"job": self.job_id})
            return None
        finally:
            batch.flush()

    def _write(self, events: list[Event]) -> None:
        """Record a batch: in the database, in the job's events file, and in the count of
        events recorded (what a follow after a restart skips)."""
        apply_events(self._database, self.job_id, events)
        with (self._folder / EVENTS_FILE).open("ab") as file:
            file.write(b"".join(dump_event(event) for event in events))
        self._progress = RemoteProgress(self._progress.attempt, self._progress.events + len(events))
        _write_progress(self._folder, self._progress)

    def _conclude(
        self, executor: Executor, finished: FinishedEvent | None, failure: str | None
    ) -> Outcome:
        """Copy the results into the job's folder; a completed run without them has failed."""
        try:
            copied = executor.fetch_results(self.job_id, self._folder)
        except KnownError as error:
            log.warning("could not fetch the results", extra={"job": self.job_id})
            if finished is not None and finished.status == JobStatus.COMPLETED.value:
                return None, error.message
            return finished, failure
        log.info("results fetched", extra={"job": self.job_id, "copied": copied})
        return finished, failure


def _outcome(finished: FinishedEvent | None, error: ErrorEvent | None) -> Outcome:
    if finished is not None:
        return finished, None
    if error is not None:
        return None, error.message
    return None, "The run on the cluster ended without reporting a result; retry it."
