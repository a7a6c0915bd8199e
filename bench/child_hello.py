"""Reference for start-up: the smallest PySide6 window, timed to its first paint."""

import json

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QLabel


class FirstPaint(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            print(json.dumps({"event": "first_paint"}), flush=True)
            QTimer.singleShot(0, app.quit)
        return False


app = QApplication([])
label = QLabel("hello")
watcher = FirstPaint()
label.installEventFilter(watcher)
label.show()
app.exec()
