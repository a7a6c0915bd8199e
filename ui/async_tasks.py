"""Async work on the GUI thread: the qasync event loop and the tasks a view owns.

Ollama calls are I/O, so they run as asyncio tasks on the qasync loop, which is Qt's own event
loop: a coroutine waits without blocking the window, and its callbacks run on the GUI thread.
CPU work still goes to `TaskRunner` (threads) or a subprocess; never here.

`AsyncTasks` keeps a reference to every task it starts (asyncio keeps only weak ones, so an
unreferenced task can vanish mid-flight) and cancels them all when its owner closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import qasync
import shiboken6
from PySide6.QtCore import QCoreApplication, QObject

from app.errors import KnownError
from app.workers.background import TaskFailure

log = logging.getLogger(__name__)
T = TypeVar("T")


def install_event_loop(app: QCoreApplication) -> asyncio.AbstractEventLoop:
    """Make the qasync loop the asyncio loop of this thread, running whenever Qt's loop runs.

    `already_running` marks it running at once, so tasks started before `app.exec()` (and in
    tests, which spin Qt's loop through pytest-qt) run like any other.
    """
    current = asyncio.events._get_running_loop()
    if isinstance(current, qasync.QEventLoop):
        return cast(asyncio.AbstractEventLoop, current)
    loop = cast(asyncio.AbstractEventLoop, qasync.QEventLoop(app, already_running=True))
    asyncio.set_event_loop(loop)
    # asyncio's own loops install these when they run; qasync's does not. Without them an async
    # generator left unfinished (httpcore's, when a stream stops at its final line) is closed
    # synchronously when collected, which fails with "async generator ignored GeneratorExit".
    sys.set_asyncgen_hooks(
        firstiter=loop._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
        finalizer=loop._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
    )
    return loop


def remove_event_loop(
    loop: asyncio.AbstractEventLoop, *closing: Coroutine[Any, Any, Any], timeout_s: float = 5.0
) -> None:
    """Undo install_event_loop (at the end of the app, and of each test): run the `closing`
    coroutines (clients to close), cancel every other task, let them finish, close the loop."""
    if loop.is_closed():
        return
    loop.stop()  # not running any more, so that run_until_complete may spin it
    asyncio.events._set_running_loop(None)
    left = asyncio.all_tasks(loop)

    async def finish() -> None:
        await asyncio.gather(*closing, return_exceptions=True)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await loop.shutdown_asyncgens()

    try:
        loop.run_until_complete(asyncio.wait_for(finish(), timeout_s))
    except TimeoutError:
        log.warning("async work did not finish when the app closed")
    finally:
        asyncio.set_event_loop(None)
        sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
        loop.close()
        # The loop and its Qt timer objects form reference cycles. Collect them here, on the
        # GUI thread: a collection that happens to run in another thread would destroy Qt
        # objects there, and Qt crashes on the timers of an object deleted off its thread.
        gc.collect()


class AsyncTasks(QObject):
    """The asyncio tasks of one view; results and errors come back to callbacks on the GUI
    thread. Known errors (Ollama down, a refused request) arrive as one sentence."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled: set[asyncio.Task[Any]] = set()  # referenced until they have ended
        # Its view is being deleted: what it started stops (a closure over the sets, not self,
        # whose Python side may already be going).
        tasks = self._tasks
        self.destroyed.connect(lambda *_args: [task.cancel() for task in list(tasks)])

    def start(
        self,
        work: Coroutine[Any, Any, T],
        *,
        on_success: Callable[[T], None] | None = None,
        on_error: Callable[[TaskFailure], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> asyncio.Task[T]:
        loop = install_event_loop(QCoreApplication.instance())  # type: ignore[arg-type]
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, on_success, on_error, on_done))
        return task

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def cancel_all(self) -> None:
        """Cancel every task; `busy` is False at once (they end on the loop's next turns)."""
        for task in list(self._tasks):
            task.cancel()
        self._cancelled |= self._tasks
        self._tasks.clear()

    def _finished(
        self,
        task: asyncio.Task[Any],
        on_success: Callable[[Any], None] | None,
        on_error: Callable[[TaskFailure], None] | None,
        on_done: Callable[[], None] | None,
    ) -> None:
        self._tasks.discard(task)
        self._cancelled.discard(task)
        if not shiboken6.isValid(self):
            return  # its view is gone: nothing to tell
        try:
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                if on_success is not None:
                    on_success(task.result())
                return
            failure = _failure(error)
            if on_error is not None:
                on_error(failure)
            elif not failure.known:
                log.error("async task failed", extra={"traceback": failure.details})
        finally:
            if on_done is not None:
                on_done()


def _failure(error: BaseException) -> TaskFailure:
    if isinstance(error, KnownError):
        return TaskFailure(error.message, known=True)
    details = "".join(traceback.format_exception(error))
    log.error("unexpected error in async work", extra={"traceback": details})
    return TaskFailure(f"{type(error).__name__}: {error}", known=False, details=details)
