"""The Models tab while a pull streams its progress: the GUI event loop's longest stall.

The stand-in Ollama runs in its own process and serves a registry model of three layers; it
writes a progress line every `PULL_LINE_DELAY_S` (real Ollama writes one per layer about every
60 ms; this is far denser). The ModelsTab pulls it offscreen on the qasync loop, as in the app,
while a 5 ms QTimer heartbeat records the gaps between its ticks, from the click on Pull to the
model being listed.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

from bench.common import ROOT, child_env

MODEL = "bench-pull:latest"
PULL_LINE_DELAY_S = 0.002
LAYERS = [400_000_000, 300_000_000, 200_000_000]
STEPS = 1500  # progress lines per layer: 4,500 in all, three every 2 ms
SERVER = f"""
import sys
from tests.ollama_server import OllamaStandIn
server = OllamaStandIn()
server.pull_chunk_delay = {PULL_LINE_DELAY_S}
server.pull_steps = {STEPS}
server.add_registry_model({MODEL!r}, layer_sizes={LAYERS!r})
server.start()
print(server.url, flush=True)
sys.stdin.read()
server.close()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from ui.async_tasks import install_event_loop, remove_event_loop
    from ui.models_tab import ModelsTab
    from ui.ollama_connection import OllamaConnection

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop = install_event_loop(app)
    connection = OllamaConnection(url)
    tab = ModelsTab(connection)
    tab.resize(1180, 700)
    tab.show()
    connection.start()

    def spin_until(done, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            waiter = QEventLoop()
            QTimer.singleShot(5, waiter.quit)
            waiter.exec()

    spin_until(lambda: tab.loaded, 30)
    ticks: list[float] = []
    heartbeat = QTimer(interval=5)
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start()
    tab.pull(MODEL)
    started = time.monotonic()
    spin_until(lambda: not tab.pulling and MODEL in tab.model.names(), 300)
    seconds = time.monotonic() - started
    heartbeat.stop()
    tab.shut_down()
    remove_event_loop(loop, *connection.closing_work())
    server.stdin.close()
    server.wait(timeout=30)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ticks)]
    if MODEL not in tab.model.names():
        raise SystemExit("the pull did not finish")
    report = {
        "seconds": seconds,
        "max_gap_ms": max(gaps),
        "p99_gap_ms": percentile(gaps, 0.99),
        "ticks": len(ticks),
        "lines": STEPS * len(LAYERS),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
