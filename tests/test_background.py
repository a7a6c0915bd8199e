"""The one background-work helper: results on the GUI thread, errors sorted, cooperative cancel."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QThread

from app.errors import BadInputError
from app.workers.background import TaskCancelled, TaskFailure, TaskRunner
from tools.qt_contract import _names


def _run(qtbot, work, **callbacks):
    runner = TaskRunner()
    outcome: dict[str, object] = {}

    def done(kind):
        def record(value):
            outcome[kind] = value
            outcome["thread"] = QThread.currentThread()

        return record

    runner.submit(work, on_success=done("result"), on_error=done("failure"), **callbacks)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert runner.shutdown()
    return outcome


def test_result_arrives_on_the_calling_thread(qtbot):
    worker_threads = []

    def work(_context):
        worker_threads.append(threading.current_thread())
        return 42

    outcome = _run(qtbot, work)
    assert outcome["result"] == 42
    assert outcome["thread"] is QThread.currentThread()
    assert worker_threads[0] is not threading.main_thread()


def test_known_error_keeps_its_sentence(qtbot):
    def work(_context):
        raise BadInputError("data.csv has ragged rows at line 4; fix the file.")

    failure = _run(qtbot, work)["failure"]
    assert isinstance(failure, TaskFailure)
    assert failure.known and not failure.cancelled
    assert failure.message == "data.csv has ragged rows at line 4; fix the file."


def test_a_bug_is_reported_with_its_traceback(qtbot, caplog):
    def work(_context):
        return {}["missing"]

    failure = _run(qtbot, work)["failure"]
    assert not failure.known
    assert "KeyError" in failure.details
    assert "see the log" in failure.message
    assert any("background task failed" in r.message for r in caplog.records)


def test_cancel_is_cooperative(qtbot):
    runner = TaskRunner()
    started = threading.Event()
    outcome: list[TaskFailure] = []

    def work(context):
        started.set()
        while not context.cancelled():
            time.sleep(0.005)
        raise TaskCancelled

    handle = runner.submit(work, on_error=outcome.append)
    assert started.wait(5)
    handle.cancel()
    qtbot.waitUntil(lambda: bool(outcome), timeout=10_000)
    assert outcome[0].cancelled
    assert runner.shutdown()


def test_progress_is_throttled(qtbot):
    seen: list[int] = []

    def work(context):
        for step in range(10_000):
            context.progress(step)
        context.progress(10_000, force=True)
        return None

    _run(qtbot, work, on_progress=seen.append)
    assert seen[-1] == 10_000
    assert len(seen) < 50


def test_the_qt_contract_reads_import_lines():
    assert _names("from PySide6.QtWidgets import QLabel", "PySide6.QtWidgets")
    assert _names("import PySide6.QtGui", "PySide6.QtGui")
    assert _names("from PySide6.QtGui.private import X", "PySide6.QtGui")
    assert not _names("from PySide6.QtCore import QObject", "PySide6.QtGui")
    assert not _names("from PySide6.QtGuiExtras import X", "PySide6.QtGui")


_CHAINED_TASKS = """
import sys
from PySide6.QtCore import QCoreApplication, QTimer
from app.workers.background import TaskRunner

app = QCoreApplication(sys.argv)
runner = TaskRunner(max_threads=1)
done = [0]

def next_task(_result=None):
    done[0] += 1
    if done[0] == 10_000:
        app.quit()
        return
    runner.submit(lambda _context: None, on_success=next_task)

QTimer.singleShot(0, next_task)
app.exec()
runner.shutdown()
print(done[0])
"""


def test_ten_thousand_tasks_each_submitted_from_the_last_ones_callback():
    """A dispatcher submits a task from every callback: the runner must survive the churn (a
    QObject pair per task, deleted later, crashed PySide within a few thousand)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _CHAINED_TASKS],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["10000"]
