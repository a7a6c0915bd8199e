"""The one way to run background work in the window: a QRunnable on a thread pool.

`TaskRunner.submit(work, on_success=..., on_error=..., on_progress=...)` runs `work(context)` on a
pool thread. Callbacks always run on the thread that owns the runner (the GUI thread), because the
task's signals are delivered through a relay object that lives there. Work cancels cooperatively:
it checks `context.cancelled()` at each chunk; a thread is never killed.
"""

from __future__ import annotations

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


class _TaskSignals(QObject):
    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)


class _Relay(QObject):
    """Lives on the runner's thread, so the task's signals reach the callbacks there."""

    def __init__(
        self,
        on_success: Callable[[Any], None] | None,
        on_error: Callable[[TaskFailure], None] | None,
        on_progress: Callable[[Any], None] | None,
        on_done: Callable[[_Relay], None],
    ) -> None:
        super().__init__()
        self._on_success = on_success
        self._on_error = on_error
        self._on_progress = on_progress
        self._on_done = on_done

    @Slot(object)
    def on_task_progress(self, value: object) -> None:
        if self._on_progress is not None:
            self._on_progress(value)

    @Slot(object)
    def on_task_succeeded(self, result: object) -> None:
        self._on_done(self)
        if self._on_success is not None:
            self._on_success(result)

    @Slot(object)
    def on_task_failed(self, failure: TaskFailure) -> None:
        self._on_done(self)
        if self._on_error is not None:
            self._on_error(failure)


class _Task(QRunnable):
    def __init__(self, work: Callable[[TaskContext], object], signals: _TaskSignals) -> None:
        super().__init__()
        self._work = work
        self._signals = signals
        self.context = TaskContext(signals.progress.emit)

    def run(self) -> None:
        try:
            result = self._work(self.context)
        except TaskCancelled:
            self._signals.failed.emit(TaskFailure("Cancelled.", known=True, cancelled=True))
        except KnownError as error:
            self._signals.failed.emit(TaskFailure(error.message, known=True))
        except Exception as error:  # a bug: log it whole, tell the user in one sentence
            log.exception("background task failed")
            message = f"Something went wrong ({type(error).__name__}: {error}); see the log."
            self._signals.failed.emit(TaskFailure(message, False, details=traceback.format_exc()))
        else:
            self._signals.succeeded.emit(result)


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
    """Runs work off the calling thread and reports back on it."""

    def __init__(self, max_threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._active: dict[_Relay, tuple[_TaskSignals, TaskHandle]] = {}

    def submit(
        self,
        work: Callable[[TaskContext], object],
        *,
        on_success: Callable[[Any], None] | None = None,
        on_error: Callable[[TaskFailure], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> TaskHandle:
        signals = _TaskSignals()
        relay = _Relay(on_success, on_error, on_progress, self._forget)
        signals.progress.connect(relay.on_task_progress)
        signals.succeeded.connect(relay.on_task_succeeded)
        signals.failed.connect(relay.on_task_failed)
        task = _Task(work, signals)
        handle = TaskHandle(task)
        self._active[relay] = (signals, handle)
        self._pool.start(task)
        return handle

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel everything still running and wait for the threads; True if all finished."""
        for _signals, handle in self._active.values():
            handle.cancel()
        done = self._pool.waitForDone(timeout_ms)
        self._active.clear()
        return done

    def _forget(self, relay: _Relay) -> None:
        self._active.pop(relay, None)
        relay.deleteLater()
