"""Renders docs/screenshots/welcome.png: the first-run panel of a fresh data folder, against the
test suite's Ollama stand-in and this machine's real hardware probe.

Run from the repository root: QT_QPA_PLATFORM=offscreen .venv/bin/python -m tools.screenshot_welcome
"""

from __future__ import annotations

import sys
import tempfile
import time

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from app.context import AppContext
from tests.ollama_server import OllamaStandIn
from tools.screenshots import OUT
from ui.async_tasks import install_event_loop, remove_event_loop

_WAIT_S = 60


def settle(ms: int = 100) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> int:
    app = QApplication(sys.argv)
    loop = install_event_loop(app)
    from ui.main_window import MainWindow

    server = OllamaStandIn().start()
    with tempfile.TemporaryDirectory() as folder:
        context = AppContext.open(folder)
        settings = context.settings.load().model_copy(update={"ollama_url": server.url})
        context.settings.save(settings)
        window = MainWindow(context, start_workers=False)
        window.ollama.start()
        window.show()
        dialog = window.open_welcome()
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline and not _settled(dialog):
            settle()
        dialog.adjustSize()  # word-wrapped labels: the height that fits the width
        layout = dialog.layout()
        if layout is not None and layout.hasHeightForWidth():
            dialog.resize(dialog.width(), layout.totalHeightForWidth(dialog.width()))
        settle(300)
        OUT.mkdir(parents=True, exist_ok=True)
        dialog.grab().save(str(OUT / "welcome.png"))
        window.shut_down()
        remove_event_loop(loop, *window.closing_work())
        context.close()
    server.stop()
    return 0


def _settled(dialog: object) -> bool:
    from ui.welcome import WelcomeDialog

    assert isinstance(dialog, WelcomeDialog)
    return (
        "answers at" in dialog.ollama_label.text()
        and "CPU cores" in dialog.hardware_label.text()
        and dialog.quick_start_button.isEnabled()
    )


if __name__ == "__main__":
    sys.exit(main())
