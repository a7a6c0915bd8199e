"""Small dialogs, all opened with `open()` (no nested event loops): confirm, error, bug, About."""

from __future__ import annotations

import html
import platform
import sys
from collections.abc import Callable

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import qVersion
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from app import APP_NAME, __version__
from app.hardware import HardwareReport
from ui.hardware_info import CHECKING, HardwareInfo, torch_text

# The colours of a note under a form or a panel: what went wrong, what to look at, what went well.
ERROR_STYLE = "color: #b3261e;"
WARNING_STYLE = "color: #b45309;"
OK_STYLE = "color: #15803d;"

# Dialogs opened with open() must outlive the function that opened them.
_open_dialogs: set[QMessageBox] = set()


def _keep_until_closed(box: QMessageBox) -> QMessageBox:
    _open_dialogs.add(box)
    box.finished.connect(lambda _result: _open_dialogs.discard(box))
    box.open()
    return box


def confirm(
    parent: QWidget, title: str, text: str, on_yes: Callable[[], None], yes_text: str = "Delete"
) -> QMessageBox:
    """Ask a yes/no question; `on_yes` runs only if the user agrees."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=parent)
    yes = box.addButton(yes_text, QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)

    def on_finished(_result: int) -> None:
        if box.clickedButton() is yes:
            on_yes()

    box.finished.connect(on_finished)
    return _keep_until_closed(box)


def show_error(parent: QWidget | None, text: str) -> QMessageBox:
    """A known error, in its one sentence."""
    box = QMessageBox(QMessageBox.Icon.Warning, APP_NAME, text, parent=parent)
    return _keep_until_closed(box)


def show_bug_report(summary: str, details: str) -> QMessageBox:
    """A bug: the summary, and the traceback to copy into a report."""
    parent = QApplication.activeWindow()
    text = f"Something went wrong that should not have: {summary}. The details are in the log."
    box = QMessageBox(QMessageBox.Icon.Critical, APP_NAME, text, parent=parent)
    box.setDetailedText(details)
    return _keep_until_closed(box)


def about_text(torch_version: str = CHECKING) -> str:
    return (
        f"<h3>{APP_NAME} {__version__}</h3>"
        "<p>Fine-tune language models on your own machine and publish them to Ollama.</p>"
        f"<p>Qt {qVersion()} &middot; PySide6 {pyside_version} &middot; "
        f"Python {platform.python_version()} ({sys.platform})<br>"
        f"torch {html.escape(torch_version)}</p>"
    )


def show_about(parent: QWidget, hardware: HardwareInfo | None = None) -> QMessageBox:
    """The versions of the app and what it runs on; torch's comes from the hardware probe
    (a child process), so it reads "checking…" until that answers."""
    box = QMessageBox(QMessageBox.Icon.NoIcon, f"About {APP_NAME}", about_text(), parent=parent)
    box.setIconPixmap(parent.windowIcon().pixmap(64, 64))
    if hardware is not None:

        def on_answered(answer: HardwareReport | str) -> None:
            box.setText(about_text(torch_text(answer)))

        hardware.answered.connect(on_answered)
        box.finished.connect(lambda _result: hardware.answered.disconnect(on_answered))
        hardware.request()
    return _keep_until_closed(box)
