"""The one way to run background work in the window: a QRunnable on a thread pool.

`TaskRunner.submit(work, on_success=..., on_error=..., on_progress=...)` runs `work(context)` on a
pool thread. Callbacks always run on the thread that owns the runner (the GUI thread), because the
task reports through the runner's own signals, which Qt queues to that thread. Work cancels
cooperatively: it checks `context.cancelled()` at each chunk; a thread is never killed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.errors import KnownError

log = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 0.1  # a few updates a second are enough for any progress bar


@dataclass(frozen=True)
class TaskFailure:
    """Why a task did not succeed: a known error's sentence, or a bug with its traceback."""

    message: str
    known: bool
    cancelled: bool = False
    details: str | None = None


class TaskCancelled(Exception):
    """Raised by work that noticed `context.cancelled()` and stopped cleanly."""


class TaskContext:
    """What the work sees: a cancel flag and a throttled progress reporter."""

    def __init__(self, emit_progress: Callable[[object], None]) -> None:
        self._cancel = threading.Event()
        self._emit_progress = emit_progress
        self._last_progress = 0.0

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def progress(self, value: object, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= _PROGRESS_INTERVAL_S:
            self._last_progress = now
            self._emit_progress(value)


@dataclass(frozen=True)
class _Callbacks:
    on_success: Callable[[Any], None] | None
    on_error: Callable[[TaskFailure], None] | None
    on_progress: Callable[[Any], None] | None


class _Task(QRunnable):
    """Runs the work on a pool thread and reports through the runner's own signals, tagged
    with its number: no QObject is made per task (see TaskRunner)."""

    def __init__(
        self, number: int, work: Callable[[TaskContext], object], runner: TaskRunner
    ) -> None:
        super().__init__()
        self._number = number
        self._work = work
        self._runner = runner
        self.context = TaskContext(lambda value: runner.task_progress.emit(number, value))

    def run(self) -> None:
        outcome: object
        try:
            outcome = self._work(self.context)
        except TaskCancelled:
            outcome = TaskFailure("Cancelled.", known=True, cancelled=True)
        except KnownError as error:
            outcome = TaskFailure(error.message, known=True)
        except Exception as error:  # a bug: log it whole, tell the user in one sentence
            log.exception("background task failed")
            message = f"Something went wrong ({type(error).__name__}: {error}); see the log."
            outcome = TaskFailure(message, False, details=traceback.format_exc())
        else:
            self._runner.task_succeeded.emit(self._number, outcome)
            return
        self._runner.task_failed.emit(self._number, outcome)


class TaskHandle:
    """Returned by `submit`: lets the caller cancel the work."""

    def __init__(self, task: _Task) -> None:
        self._context = task.context

    def cancel(self) -> None:
        self._context.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._context.cancelled()


class TaskRunner(QObject):
    """Runs work off the calling thread and reports back on it.

    Each task reports through the runner's three signals, tagged with the task's number; the
    runner lives on the calling thread, so Qt queues those signals to it, and it calls the
    task's callbacks there. An earlier design made a QObject pair per task and deleted it
    with deleteLater; submitting tasks from callbacks thousands of times crashed PySide.
    """

    task_progress = Signal(int, object)
    task_succeeded = Signal(int, object)
    task_failed = Signal(int, object)

    def __init__(self, max_threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._active: dict[int, tuple[_Callbacks, TaskHandle]] = {}
        self._numbers = itertools.count()
        self.task_progress.connect(self._on_progress)
        self.task_succeeded.connect(self._on_succeeded)
        self.task_failed.connect(self._on_failed)

    def submit(
        self,
        work: Callable[[TaskContext], object],
        *,
        on_success: Callable[[Any], None] | None = None,
        on_error: Callable[[TaskFailure], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> TaskHandle:
        number = next(self._numbers)
        task = _Task(number, work, self)
        handle = TaskHandle(task)
        self._active[number] = (_Callbacks(on_success, on_error, on_progress), handle)
        self._pool.start(task)
        return handle

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel everything still running and wait for the threads; True if all finished."""
        for _callbacks, handle in self._active.values():
            handle.cancel()
        done = self._pool.waitForDone(timeout_ms)
        self._active.clear()
        return done

    @Slot(int, object)
    def _on_progress(self, number: int, value: object) -> None:
        entry = self._active.get(number)
        if entry is not None and entry[0].on_progress is not None:
            entry[0].on_progress(value)

    @Slot(int, object)
    def _on_succeeded(self, number: int, result: object) -> None:
        entry = self._active.pop(number, None)
        if entry is not None and entry[0].on_success is not None:
            entry[0].on_success(result)

    @Slot(int, object)
    def _on_failed(self, number: int, failure: TaskFailure) -> None:
        entry = self._active.pop(number, None)
        if entry is not None and entry[0].on_error is not None:
            entry[0].on_error(failure)
