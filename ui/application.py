"""Starting the window: the QApplication, the crash hook, the data folder, the main window."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from types import TracebackType

from PySide6.QtCore import (
    QEvent,
    QMessageLogContext,
    QObject,
    QTimer,
    QtMsgType,
    qInstallMessageHandler,
)
from PySide6.QtWidgets import QApplication, QMessageBox

from app import APP_NAME, __version__
from app.errors import KnownError

log = logging.getLogger(__name__)
# Modules that must not be loaded when the window first paints (the smoke run reports them).
HEAVY_MODULES = ("torch", "transformers", "peft", "pandas", "pyarrow", "numpy")


def run_gui(home: str | None, smoke: bool) -> int:
    """Open the main window; with `smoke`, quit right after its first paint."""
    if smoke:
        _use_offscreen_without_a_display()
    app = QApplication.instance() or QApplication(sys.argv)
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName("Model Training Manager")
    app.setDesktopFileName("model-training-manager")
    install_crash_hook()
    install_qt_message_handler()
    from app.context import AppContext

    try:
        context = AppContext.open(home)
    except KnownError as error:
        return _refuse_to_start(error.message, smoke)
    from ui.async_tasks import install_event_loop, remove_event_loop
    from ui.main_window import MainWindow

    loop = install_event_loop(app)  # Ollama's async calls run on Qt's own loop
    window = MainWindow(context, start_workers=not smoke, show_welcome=not smoke)
    if smoke:
        _quit_after_first_paint(app, window)
    window.show()
    try:
        return app.exec()
    finally:
        window.shut_down()
        remove_event_loop(loop, *window.closing_work())
        context.close()


def _use_offscreen_without_a_display() -> None:
    """A smoke run on a machine with no screen (CI, a packaged-build check) paints offscreen."""
    no_display = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and no_display:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _refuse_to_start(message: str, smoke: bool) -> int:
    print(message, file=sys.stderr)
    if not smoke:
        box = QMessageBox(QMessageBox.Icon.Critical, APP_NAME, message)
        box.exec()  # nothing else is running yet: a modal box is the whole app here
    return 1


class _FirstPaint(QObject):
    """Quits the app once the watched window has painted, reporting how long that took."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self._app = app
        self._seen = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint and not self._seen:
            self._seen = True
            # The benchmark times this line's arrival from the process's spawn.
            report = {
                "event": "first_paint",
                "heavy_modules": [m for m in HEAVY_MODULES if m in sys.modules],
            }
            print(json.dumps(report), flush=True)
            QTimer.singleShot(0, self._app.quit)
        return False


def _quit_after_first_paint(app: QApplication, window: QObject) -> None:
    watcher = _FirstPaint(app)
    window.installEventFilter(watcher)


# Harmless messages of Qt's offscreen and minimal platforms, which have no window manager.
KNOWN_HARMLESS_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)


def _on_qt_message(kind: QtMsgType, _context: QMessageLogContext, message: str) -> None:
    """Qt's own messages go to the app's log; warnings and worse are also printed."""
    if message in KNOWN_HARMLESS_QT_MESSAGES:
        log.debug("qt: %s", message)
        return
    level = {
        QtMsgType.QtDebugMsg: logging.DEBUG,
        QtMsgType.QtInfoMsg: logging.INFO,
        QtMsgType.QtWarningMsg: logging.WARNING,
    }.get(kind, logging.ERROR)
    log.log(level, "qt: %s", message)
    if level >= logging.WARNING:
        print(f"qt: {message}", file=sys.stderr)


def install_qt_message_handler() -> None:
    qInstallMessageHandler(_on_qt_message)


def install_crash_hook() -> None:
    """Log any uncaught exception with its traceback and tell the user, without quitting."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, error, tb))
        log.error("uncaught exception", extra={"traceback": text})
        print(text, file=sys.stderr)
        if QApplication.instance() is not None and not isinstance(error, KeyboardInterrupt):
            from ui.dialogs import show_bug_report

            show_bug_report(f"{kind.__name__}: {error}", text)

    sys.excepthook = hook
