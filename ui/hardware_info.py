"""The window's one answer about this machine's hardware, asked of the probe child process once.

The welcome panel and the About box both show it; the probe runs on the window's TaskRunner,
never on the GUI thread, and a success is kept so that the child (which imports torch) runs once.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Signal

from app.hardware import HardwareReport, ProbeCancelled, probe_hardware
from app.workers.background import TaskCancelled, TaskContext, TaskFailure, TaskHandle, TaskRunner

# What a view shows for torch while the probe has not answered.
CHECKING = "checking…"


class HardwareInfo(QObject):
    """Signals: `answered(object)`: a HardwareReport, or the one sentence saying why there is none.

    `command` replaces the probe's command line (tests print a fixed report through it).
    """

    answered = Signal(object)

    def __init__(
        self,
        runner: TaskRunner,
        parent: QObject | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(parent)
        self._runner = runner
        self.command = list(command) if command is not None else None
        self.answer: HardwareReport | str | None = None
        self._handle: TaskHandle | None = None

    def request(self) -> None:
        """`answered` follows: at once when the machine was probed already, else when it has."""
        if isinstance(self.answer, HardwareReport):
            self.answered.emit(self.answer)
            return
        if self._handle is not None:
            return  # on its way
        command = self.command
        self._handle = self._runner.submit(
            lambda context: _probe(command, context),
            on_success=self._on_answer,
            on_error=self._on_failure,
        )

    def _on_answer(self, report: HardwareReport) -> None:
        self._handle = None
        self.answer = report
        self.answered.emit(report)

    def _on_failure(self, failure: TaskFailure) -> None:
        self._handle = None
        if failure.cancelled:
            return  # the window is closing
        self.answer = failure.message  # a later request() tries again
        self.answered.emit(failure.message)


def _probe(command: list[str] | None, context: TaskContext) -> HardwareReport:
    try:
        return probe_hardware(command, cancelled=context.cancelled)
    except ProbeCancelled as cancelled:
        raise TaskCancelled from cancelled


def torch_text(answer: HardwareReport | str | None) -> str:
    """torch's version as the About box says it."""
    if answer is None:
        return CHECKING
    if isinstance(answer, str):
        return "unknown (the hardware check failed)"
    return answer.torch or "not installed (GUI-only build)"
