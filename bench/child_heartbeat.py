"""The GUI event loop while a big import runs: a 5 ms QTimer heartbeat records the longest gap."""

import json
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.context import AppContext
from app.datasets.importer import ImportOptions
from bench.common import peak_rss_mb
from ui.main_window import MainWindow

path, home = Path(sys.argv[1]), sys.argv[2]
app = QApplication([])
context = AppContext.open(home)
window = MainWindow(context)
window.show()
gaps: list[float] = []
last = [time.perf_counter()]


def beat() -> None:
    now = time.perf_counter()
    gaps.append(now - last[0])
    last[0] = now


timer = QTimer()
timer.setInterval(5)
timer.timeout.connect(beat)
result: dict[str, object] = {}
tab = window.datasets_tab
tab.status_message.connect(lambda text: (result.setdefault("status", text), app.quit()))
QTimer.singleShot(0, timer.start)
start = time.perf_counter()
QTimer.singleShot(50, lambda: tab.start_import(path, ImportOptions(name="heartbeat")))
QTimer.singleShot(300_000, app.quit)  # a failed import shows a dialog instead; stop anyway
app.exec()
elapsed = time.perf_counter() - start
timer.stop()
window.shut_down()
context.close()
ordered = sorted(gaps)
report = {
    "max_gap_ms": ordered[-1] * 1000,
    "p99_gap_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    "beats": len(gaps),
    "import_seconds": elapsed,
    "status": result.get("status"),
    "peak_rss_mb": peak_rss_mb(),
}
print(json.dumps(report))
