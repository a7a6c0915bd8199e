"""The worker pool: a QThreadPool of JobRunners, fed by an event-driven dispatcher.

The dispatcher starts the oldest queued job the moment a slot frees, a job is queued, or the
queue marker file changes (another process, `mtm jobs create`, queued a job): no polling loop.
The same pool runs in the window and in `mtm worker run` (a QCoreApplication).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from PySide6.QtCore import QFileSystemWatcher, QObject, QThreadPool, QTimer, Signal, Slot

from app.db.models import Job
from app.db.session import Database
from app.errors import KnownError
from app.jobs.lifecycle import JobStatus
from app.jobs.service import (
    QUEUE_SIGNAL_FILE,
    cancel_job,
    claim,
    finish_job,
    gpu_memory_needed,
    interrupt_orphans,
    job_dir,
    next_queued,
    signal_queue,
    wants_gpu,
    worker_name,
)
from app.paths import DataHome
from app.workers import control
from app.workers.gpus import Gpu, GpuAllocator, discover_gpus
from app.workers.runner import (
    GRACE_PERIOD_S,
    JobRunner,
    RunnerSignals,
    TrainerCommand,
    trainer_command,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerState:
    """What one slot is doing: a job id, or None when idle."""

    slot: int
    job_id: str | None


class WorkerPool(QObject):
    """Signals: job_started(job_id), job_event(job_id, Event), job_finished(job_id, status),
    idle() when nothing runs and nothing is queued, state_changed()."""

    job_started = Signal(str)
    job_event = Signal(str, object)
    job_finished = Signal(str, str)
    idle = Signal()
    state_changed = Signal()
    stopped = Signal()  # after stop_all(), once the last running job has ended

    def __init__(
        self,
        database: Database,
        home: DataHome,
        max_workers: int,
        parent: QObject | None = None,
        *,
        command: TrainerCommand = trainer_command,
        grace_s: float = GRACE_PERIOD_S,
        gpus: list[Gpu] | None = None,
    ) -> None:
        super().__init__(parent)
        self._gpus = None if gpus is None else GpuAllocator(gpus) if gpus else None
        self._discover_gpus = gpus is None
        self._command = command
        self._grace_s = grace_s
        self._database = database
        self._home = home
        self._max_workers = max(1, max_workers)
        self._threads = QThreadPool(self)
        self._threads.setMaxThreadCount(self._max_workers)
        self._running: dict[str, JobRunner] = {}
        self._paused = False
        self._stopping = False
        self._name = worker_name()
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self.on_queue_file_changed)
        self._watcher.directoryChanged.connect(self.on_jobs_folder_changed)
        # The state file is written once after a burst of changes (a dispatch that starts
        # several jobs), not once per change: it is file I/O on the thread that owns the pool.
        self._publish_timer = QTimer(self, singleShot=True, interval=0)
        self._publish_timer.timeout.connect(self._publish_state)
        self.state_changed.connect(self._publish_timer.start)

    # --- control -----------------------------------------------------------------------------

    def start(self) -> None:
        """Mark orphaned jobs interrupted, watch the queue, and start what can start."""
        interrupt_orphans(self._database)
        signal_queue(self._home)  # make sure the marker exists before watching it
        self._watcher.addPath(str(self._home.jobs / QUEUE_SIGNAL_FILE))
        self._watcher.addPath(str(self._home.jobs))  # the pause marker comes and goes there
        self._paused = control.is_paused(self._home)
        if self._discover_gpus:
            found = discover_gpus()
            self._gpus = GpuAllocator(found) if found else None
        self._publish_state()
        self.state_changed.emit()  # orphans may have just become interrupted
        self.dispatch()

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def set_max_workers(self, count: int) -> None:
        """Change the number of slots while running; running jobs are never stopped for it."""
        self._max_workers = max(1, count)
        self._threads.setMaxThreadCount(max(self._max_workers, len(self._running)))
        self.dispatch()
        self.state_changed.emit()

    def pause(self) -> None:
        """No new job starts, in this or any pool on the data folder; running ones go on."""
        control.set_paused(self._home, True)
        self._set_paused(True)

    def resume(self) -> None:
        control.set_paused(self._home, False)
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        self.state_changed.emit()
        self.dispatch()

    @property
    def paused(self) -> bool:
        return self._paused

    def cancel(self, job_id: str) -> None:
        """Cancel a job: queued ones at once, running ones after their checkpoint."""
        runner = self._running.get(job_id)
        if runner is not None:
            runner.stop(JobStatus.CANCELLED, self._grace_s)
        else:
            cancel_job(self._database, job_id)

    def workers(self) -> list[WorkerState]:
        jobs: list[str | None] = list(self._running)
        slots = max(self._max_workers, len(jobs))
        jobs += [None] * (slots - len(jobs))
        return [WorkerState(slot, job) for slot, job in enumerate(jobs)]

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    def stop_all(self) -> None:
        """Start no more jobs and ask the running ones to checkpoint and stop, as interrupted
        (they resume next time); `stopped` follows when the last one has ended."""
        self._stopping = True
        for runner in list(self._running.values()):
            runner.stop(JobStatus.INTERRUPTED, self._grace_s)
        if not self._running:
            self.stopped.emit()

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """stop_all(), then wait for the threads (for the headless worker, not the window)."""
        self.stop_all()
        done = self._threads.waitForDone(timeout_ms)
        control.remove_state(self._home, os.getpid())
        return done

    # --- dispatching -------------------------------------------------------------------------

    @Slot()
    def dispatch(self) -> None:
        """Start queued jobs, oldest first, while slots (and GPU memory) are free."""
        while not (self._paused or self._stopping) and len(self._running) < self._max_workers:
            job = next_queued(self._database)
            if job is None:
                break
            placement = self._place(job)
            if placement is None:
                break  # the oldest job waits for GPU memory; the order is kept
            if claim(self._database, job.id, self._name) is None:
                continue  # another pool took it
            if isinstance(placement, str):
                self._refuse(job.id, placement)
                continue
            self._start(job.id, placement)
        if not self._running and not self._paused:
            self.idle.emit()

    def _place(self, job: Job) -> dict[str, str] | str | None:
        """The job's environment (its GPUs), None when no GPU has room now, or (a sentence)
        why it could never fit."""
        if self._gpus is None or not wants_gpu(job):
            return {}
        try:
            indices = self._gpus.place(job.id, gpu_memory_needed(job))
        except KnownError as error:
            return error.message
        if indices is None:
            return None
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, indices))}

    def _refuse(self, job_id: str, reason: str) -> None:
        finish_job(self._database, job_id, None, reason)
        self.job_finished.emit(job_id, JobStatus.FAILED.value)

    def _start(self, job_id: str, environment: dict[str, str]) -> None:
        signals = RunnerSignals(self)
        signals.job_event.connect(self.job_event)
        signals.finished.connect(self.on_runner_finished)
        threads = max(1, (os.cpu_count() or 1) // (len(self._running) + 1))
        folder = job_dir(self._home, job_id)
        runner = JobRunner(
            self._database,
            job_id,
            folder,
            threads,
            signals,
            command=self._command,
            environment=environment,
        )
        self._running[job_id] = runner
        self._threads.start(runner)
        log.info("job started", extra={"job": job_id, "threads": threads})
        self.job_started.emit(job_id)
        self.state_changed.emit()

    @Slot(str, str)
    def on_runner_finished(self, job_id: str, status: str) -> None:
        runner = self._running.pop(job_id, None)
        if runner is not None:
            runner.signals.deleteLater()
        if self._gpus is not None:
            self._gpus.release(job_id)
        log.info("job finished", extra={"job": job_id, "status": status})
        self.job_finished.emit(job_id, status)
        self.state_changed.emit()
        if self._stopping and not self._running:
            self.stopped.emit()
        self.dispatch()

    @Slot(str)
    def on_jobs_folder_changed(self, _path: str) -> None:
        self._set_paused(control.is_paused(self._home))

    def _publish_state(self) -> None:
        # How far each job is lives in the database, which `mtm worker status` reads.
        slots = [{"slot": w.slot, "job_id": w.job_id} for w in self.workers()]
        state = control.PoolState(os.getpid(), self._name, self._paused, self._max_workers, slots)
        control.write_state(self._home, state)

    @Slot(str)
    def on_queue_file_changed(self, path: str) -> None:
        if path not in self._watcher.files():  # replaced rather than rewritten: watch it again
            self._watcher.addPath(path)
        self.dispatch()
