"""The worker pool: a QThreadPool of JobRunners, fed by an event-driven dispatcher.

The dispatcher starts the oldest queued job the moment a slot frees, a job is queued, or the
queue marker file changes (another process, `mtm jobs create`, queued a job): no polling loop.
The same pool runs in the window and in `mtm worker run` (a QCoreApplication).

The dispatcher's database work (reading the queue, the conditional UPDATE that claims a job,
marking orphans interrupted, asking nvidia-smi for the GPUs) runs on one claim thread, so the
thread that owns the pool (the GUI thread in the window) only starts the claimed runners. One
claim round runs at a time; a dispatch asked for meanwhile runs when it lands.

A job whose spec names a cluster is claimed in the same round but run by a RemoteRunner on a pool
of its own: it waits on a socket, not a CPU, so it takes no slot. A remote run outlives the app:
quitting stops following it (it stays running). A remote job whose supervising process is gone
(this one before a restart, another window) is matched with its head at start and in every claim
round, and taken over by exactly one process, which follows it again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from PySide6.QtCore import (
    QCoreApplication,
    QElapsedTimer,
    QEventLoop,
    QFileSystemWatcher,
    QObject,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)

from app.db.models import Job
from app.db.session import Database
from app.errors import KnownError
from app.executors.reconcile import adopt
from app.executors.remote_jobs import (
    ExecutorFactory,
    close_executor,
    cluster_executors,
)
from app.jobs.lifecycle import JobStatus
from app.jobs.service import (
    QUEUE_SIGNAL_FILE,
    Owner,
    cancel_job,
    claim,
    finish_job,
    gpu_memory_needed,
    interrupt_orphans,
    job_dir,
    next_queued,
    remote_orphans,
    signal_queue,
    wants_gpu,
    worker_name,
)
from app.paths import DataHome
from app.workers import control
from app.workers.gpus import Gpu, GpuAllocator, discover_gpus
from app.workers.remote_runner import FOLLOWERS, RemoteRunner
from app.workers.runner import (
    GRACE_PERIOD_S,
    JobRunner,
    RunnerSignals,
    TrainerCommand,
    trainer_command,
)

log = logging.getLogger(__name__)


_ClaimCallback = Callable[[Any, Exception | None], None]
_UNREACHABLE_RETRY_S = 60.0  # a head that did not answer is asked about its orphans again after


class _ClaimThread(QObject):
    """One Python thread for the dispatcher's database work; results come back as a signal,
    so the callback runs on the thread that owns the pool.

    Not a TaskRunner: it was written when TaskRunner still made a QObject pair per task (which
    crashed PySide under the hundred-job fault test). TaskRunner no longer does, but a
    TaskRunner(max_threads=1) here aborted once in two runs of the remote-job tests (a new
    pool's QTimer, right after a failed test): not understood yet, so this thread stays.
    """

    _done = Signal(object, object)  # (callback, (result, exception))

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtm-claims")
        self._closed = False
        self._done.connect(self._deliver)

    def submit(self, work: Callable[[], Any], on_done: _ClaimCallback) -> None:
        if self._closed:  # the pool has shut down: nothing more starts
            return
        self._executor.submit(self._run, work, on_done)

    def _run(self, work: Callable[[], Any], on_done: _ClaimCallback) -> None:
        try:
            result = work()
        except Exception as error:  # logged here; the pool tries again on the next event
            log.exception("the dispatcher's database work failed")
            self._done.emit(on_done, (None, error))
        else:
            self._done.emit(on_done, (result, None))

    @Slot(object, object)
    def _deliver(self, on_done: _ClaimCallback, outcome: Any) -> None:
        on_done(*outcome)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)


@dataclass(frozen=True)
class _Claimed:
    """A job this pool claimed, with its environment or (a sentence) why it can never run;
    `remote`: it runs on a cluster; `follow_only`: it runs there already (after a restart)."""

    job_id: str
    placement: dict[str, str] | str
    remote: bool = False
    follow_only: bool = False


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
        executors: ExecutorFactory | None = None,
    ) -> None:
        super().__init__(parent)
        self._executors = executors or cluster_executors(database)
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
        # Remote jobs: followers on threads of their own, taking no local slot.
        self._followers = QThreadPool(self)
        self._followers.setMaxThreadCount(FOLLOWERS)
        self._remote: dict[str, RemoteRunner] = {}
        self._unreachable_until: dict[str, float] = {}  # cluster: when to ask its head again
        # One thread, so claim rounds never overlap and run in the order they were asked for.
        self._claims = _ClaimThread(self)
        self._claiming = False
        self._dispatch_again = False
        self._stopped_sent = False
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
        """Watch the queue, then (on the claim thread) mark orphaned jobs interrupted and find
        the GPUs, then start what can start. Nothing, once the pool is stopping (a window
        closed before its pool's start came round)."""
        if self._stopping:
            return
        signal_queue(self._home)  # make sure the marker exists before watching it
        self._watcher.addPath(str(self._home.jobs / QUEUE_SIGNAL_FILE))
        self._watcher.addPath(str(self._home.jobs))  # the pause marker comes and goes there
        self._paused = control.is_paused(self._home)
        self._publish_state()
        self._claiming = True
        self._claims.submit(self._prepare, self._on_prepared)

    def _prepare(self) -> list[_Claimed]:
        """On the claim thread: local orphans become interrupted; remote ones are matched with
        their heads (the returned ones are followed again); the GPUs are found."""
        interrupt_orphans(self._database)
        adopted = self._adopt_orphans_safely()
        if self._discover_gpus:
            found = discover_gpus()
            self._gpus = GpuAllocator(found) if found else None
        return adopted

    def _adopt_orphans(self) -> list[_Claimed]:
        """On the claim thread: remote jobs marked running by a process that is gone (this one
        before a restart, another window, a crashed `mtm worker run`). Those each head no longer
        knows become interrupted; the others this process takes over, unless another process
        took them first, and follows again. A head that cannot be reached is asked again a
        minute later, not in every round."""
        adopted: list[_Claimed] = []
        now = time.monotonic()
        for cluster, orphans in remote_orphans(self._database).items():
            if now < self._unreachable_until.get(cluster, 0.0):
                continue
            try:
                taken = self._adopt_from(cluster, orphans)
            except KnownError as error:  # the head is away: its jobs wait until it answers
                self._unreachable_until[cluster] = now + _UNREACHABLE_RETRY_S
                log.warning("could not reconcile", extra={"cluster": cluster, "why": error.message})
                continue
            adopted += [_Claimed(job_id, {}, remote=True, follow_only=True) for job_id in taken]
        return adopted

    def _adopt_from(self, cluster: str, orphans: dict[str, Owner]) -> list[str]:
        executor = self._executors(cluster)
        try:
            return adopt(self._database, executor, self._name, orphans)
        finally:
            close_executor(executor)

    def _on_prepared(self, adopted: list[_Claimed] | None, _error: Exception | None) -> None:
        if not self._stopping:  # else they stay running, to be followed on the next start
            for job in adopted or []:
                self._start_remote(job)
        self._claiming = False
        self.state_changed.emit()  # orphans may have just become interrupted
        self.dispatch()  # after an error too: the queue may still be readable

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
        runner = self._running.get(job_id) or self._remote.get(job_id)
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
        """Local and remote jobs; `workers()` has only the local ones, which take slots."""
        return [*self._running, *self._remote]

    def stop_all(self) -> None:
        """Start no more jobs and ask the running ones to checkpoint and stop, as interrupted
        (they resume next time); `stopped` follows when the last one has ended. Remote runs
        are not stopped: they go on on their clusters, and are followed again next time."""
        self._stopping = True
        runners: list[JobRunner | RemoteRunner] = [*self._running.values(), *self._remote.values()]
        for runner in runners:
            runner.stop(JobStatus.INTERRUPTED, self._grace_s)
        self._announce_stopped_if_done()

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """stop_all(), then wait for the threads (for the headless worker, not the window)."""
        self.stop_all()
        clock = QElapsedTimer()
        clock.start()
        while self._claiming and clock.elapsed() < timeout_ms:
            # A claim round in flight: its jobs are started and stopped at once, as interrupted.
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        done = self._threads.waitForDone(max(0, timeout_ms - clock.elapsed()))
        done = self._followers.waitForDone(max(0, timeout_ms - clock.elapsed())) and done
        self._claims.close()
        control.remove_state(self._home, os.getpid())
        return done

    # --- dispatching -------------------------------------------------------------------------

    @Slot()
    def dispatch(self) -> None:
        """Start queued jobs, front of the queue first, while slots (and GPU memory) are free.

        The claiming happens on the claim thread; its result starts the runners here.
        """
        if self._claiming:
            self._dispatch_again = True
            return
        self._dispatch_again = False
        free = self._max_workers - len(self._running)
        free_remote = FOLLOWERS - len(self._remote)
        if self._paused or self._stopping or (free <= 0 and free_remote <= 0):
            self._emit_idle_if_idle()
            return
        self._claiming = True
        work = partial(self._claim_jobs, max(0, free), max(0, free_remote))
        self._claims.submit(work, self._on_claimed)

    def _claim_jobs(self, free: int, free_remote: int) -> list[_Claimed]:
        """On the claim thread: claim up to `free` local jobs and `free_remote` remote ones
        from the front of their queues, and take over remote jobs whose process has gone since
        (a second window or worker that crashed)."""
        adopted = self._adopt_orphans_safely() if free_remote > 0 else []
        return self._claim_local(free) + adopted + self._claim_remote(free_remote - len(adopted))

    def _adopt_orphans_safely(self) -> list[_Claimed]:
        """A cluster's trouble must not keep this round from starting local jobs."""
        try:
            return self._adopt_orphans()
        except Exception:
            log.exception("could not look for orphaned remote jobs")
            return []

    def _claim_remote(self, free: int) -> list[_Claimed]:
        claimed: list[_Claimed] = []
        while len(claimed) < free:
            job = next_queued(self._database, remote=True)
            if job is None:
                break
            if claim(self._database, job.id, self._name) is not None:  # else another pool has it
                claimed.append(_Claimed(job.id, {}, remote=True))
        return claimed

    def _claim_local(self, free: int) -> list[_Claimed]:
        claimed: list[_Claimed] = []
        while len(claimed) < free:
            job = next_queued(self._database, remote=False)
            if job is None:
                break
            placement = self._place(job)
            if placement is None:
                break  # the front job waits for GPU memory; the order is kept
            if claim(self._database, job.id, self._name) is None:
                self._release_gpus(job.id)  # another pool took it
                continue
            if isinstance(placement, str):
                finish_job(self._database, job.id, None, placement)
            claimed.append(_Claimed(job.id, placement))
        return claimed

    def _on_claimed(self, claimed: list[_Claimed] | None, _error: Exception | None) -> None:
        # Still "claiming" while the runners start: a dispatch asked for by a listener of
        # job_started (a slot count raised) waits until every claimed job holds its slot.
        for job in claimed or []:
            if isinstance(job.placement, str):
                self.job_finished.emit(job.job_id, JobStatus.FAILED.value)
                self._dispatch_again = True  # a refused job leaves its slot free
                continue
            runner: JobRunner | RemoteRunner = (
                self._start_remote(job) if job.remote else self._start(job)
            )
            if self._stopping:  # stop_all() came while this job was being claimed
                runner.stop(JobStatus.INTERRUPTED, self._grace_s)
        self._claiming = False
        # With no result the database could not be read or written (locked past the busy
        # timeout, the disk gone): the next event (a job queued, a slot freed) tries again.
        if self._dispatch_again:
            self.dispatch()
        else:
            self._emit_idle_if_idle()

    def _emit_idle_if_idle(self) -> None:
        self._announce_stopped_if_done()
        if not self._busy() and not self._paused:
            self.idle.emit()

    def _announce_stopped_if_done(self) -> None:
        if self._stopping and not self._stopped_sent and not self._busy():
            self._stopped_sent = True
            self.stopped.emit()

    def _busy(self) -> bool:
        return bool(self._running or self._remote or self._claiming)

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

    def _release_gpus(self, job_id: str) -> None:
        if self._gpus is not None:
            self._gpus.release(job_id)

    def _signals(self) -> RunnerSignals:
        signals = RunnerSignals(self)
        signals.job_event.connect(self.job_event)
        signals.finished.connect(self.on_runner_finished)
        return signals

    def _start(self, job: _Claimed) -> JobRunner:
        assert not isinstance(job.placement, str)
        threads = max(1, (os.cpu_count() or 1) // (len(self._running) + 1))
        folder = job_dir(self._home, job.job_id)
        runner = JobRunner(
            self._database,
            job.job_id,
            folder,
            threads,
            self._signals(),
            command=self._command,
            environment=job.placement,
        )
        self._running[job.job_id] = runner
        self._threads.start(runner)
        log.info("job started", extra={"job": job.job_id, "threads": threads})
        self._announce_start(job.job_id)
        return runner

    def _start_remote(self, job: _Claimed) -> RemoteRunner:
        folder = job_dir(self._home, job.job_id)
        runner = RemoteRunner(
            self._database,
            job.job_id,
            folder,
            self._signals(),
            executors=self._executors,
            follow_only=job.follow_only,
        )
        self._remote[job.job_id] = runner
        self._followers.start(runner)
        log.info("remote job started", extra={"job": job.job_id, "follow": job.follow_only})
        self._announce_start(job.job_id)
        return runner

    def _announce_start(self, job_id: str) -> None:
        self.job_started.emit(job_id)
        self.state_changed.emit()

    @Slot(str, str)
    def on_runner_finished(self, job_id: str, status: str) -> None:
        runner = self._running.pop(job_id, None) or self._remote.pop(job_id, None)
        if runner is not None:
            runner.signals.deleteLater()
        self._release_gpus(job_id)
        log.info("job finished", extra={"job": job_id, "status": status})
        if status != JobStatus.RUNNING:  # a remote run let go as the app quits has not ended
            self.job_finished.emit(job_id, status)
        self.state_changed.emit()
        self.dispatch()  # or, when stopping, `stopped` once the last job has ended

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
