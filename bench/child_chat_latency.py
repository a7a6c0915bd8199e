"""The playground while a long chat answer streams into it: event-loop stalls and token latency.

The stand-in Ollama (tests.ollama_server) runs in a process of its own, as Ollama does (in this
one it would share the GIL with the window and slow it down), and streams a 2,000-token reply
with `token_delay` 2 ms; the PlaygroundPane is shown offscreen on the qasync loop, as in the app.
A short chat first opens the connection and imports httpx (which the app does on first use);
then two runs are measured: one answer, and two at once (compare mode).

What is measured, all on CLOCK_MONOTONIC (time.monotonic, one clock for every process here):

* stall: a 5 ms QTimer heartbeat records the gaps between its ticks while the answer streams
  (from Send to the last answer done); reported as max and p99.
* arrival → document: for each token, from the stand-in having written its line to the socket
  (its `_Exchange.write_line` returned) to the token's text being in the transcript's
  QTextDocument (the view's `append_text` returned). That is the socket, httpx, the client's
  parsing, the loop waking up, and the insert with its layout.
* parse → document: from the client's ChatChunk being parsed to the same point: the pane's share.
* document → painted: from the insert to the next paint of the transcript's viewport begun after
  it (an event filter on the viewport): the wait for the window to show it; arrival → painted
  is the two together, a token's way from the socket to the screen.
* garbage collections during the stream, and the longest (a stall's usual suspect).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

TOKENS = 2000
TOKEN_DELAY_S = 0.002
TUNED, BASE = "bench-tuned:latest", "bench-base:latest"


def reply(seed: int) -> str:
    """A 2,000-token answer in paragraphs of 80 tokens (each token a word and its space)."""
    words = [f"w{seed}x{number}" for number in range(TOKENS)]
    return "".join(
        word + ("\n\n" if number % 80 == 79 else " ") for number, word in enumerate(words)
    )


# -- the stand-in, in its own process -----------------------------------------------------------


def serve() -> None:
    """Print the stand-in's URL, serve until stdin closes, then print when each token was
    written, per model."""
    from tests import ollama_server
    from tests.ollama_server import OllamaStandIn

    written: dict[str, list[float]] = defaultdict(list)
    original = ollama_server._Exchange.write_line

    def write_line(exchange: Any, obj: Any) -> None:
        original(exchange, obj)
        message = obj.get("message") if isinstance(obj, dict) else None
        if isinstance(message, dict) and message.get("content"):
            written[obj["model"]].append(time.monotonic())

    ollama_server._Exchange.write_line = write_line  # type: ignore[method-assign]
    server = OllamaStandIn()
    server.token_delay = TOKEN_DELAY_S
    for number, model in enumerate((TUNED, BASE)):
        server.add_model(model)
        server.set_reply(model, reply(number))
    server.start()
    print(server.url, flush=True)
    sys.stdin.read()  # until the parent closes it
    server.token_delay = 0.0
    server.close()
    print(json.dumps(written), flush=True)


def run_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.child_chat_latency", "serve"],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# -- the window ---------------------------------------------------------------------------------


class Probe:
    """The timestamps of one measured run."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.last_beat = time.monotonic()
        self.streaming = False
        self.parsed: dict[str, list[float]] = defaultdict(list)
        self.inserted: dict[str, list[float]] = defaultdict(list)
        self.painted: dict[str, list[float]] = defaultdict(list)
        self.collections: list[float] = []  # how long each garbage collection took
        self._collecting = 0.0

    def on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.monotonic()
        elif self.streaming:
            self.collections.append(time.monotonic() - self._collecting)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def figures(values: list[float]) -> dict[str, float]:
    milliseconds = [value * 1000 for value in values]
    return {
        "median_ms": percentile(milliseconds, 0.5),
        "p99_ms": percentile(milliseconds, 0.99),
        "max_ms": max(milliseconds),
    }


def main() -> None:
    from PySide6.QtCore import QEvent, QEventLoop, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    from app.ollama.types import ChatChunk
    from bench.common import peak_rss_mb
    from ui.async_tasks import install_event_loop, remove_event_loop
    from ui.ollama_connection import OllamaConnection
    from ui.playground import ChatSide, PlaygroundPane

    server, url = run_server()
    app = QApplication(sys.argv[:1])
    loop = install_event_loop(app)
    connection = OllamaConnection(url)
    pane = PlaygroundPane(connection)
    connection.start()  # the status check on its timer, as in the app
    pane.resize(1400, 900)
    pane.show()
    probe = Probe()
    gc.callbacks.append(probe.on_gc)
    # Each run spins a local loop: app.quit() would close the pane's window as well.
    spin = QEventLoop()

    original_parse = ChatChunk.from_line.__func__  # type: ignore[attr-defined]

    def from_line(cls: type[ChatChunk], line: dict[str, Any]) -> ChatChunk:
        chunk = original_parse(cls, line)
        if chunk.text:
            probe.parsed[chunk.model].append(time.monotonic())
        return chunk  # type: ignore[no-any-return]

    ChatChunk.from_line = classmethod(from_line)  # type: ignore[method-assign,assignment]

    class PaintFilter(QObject):
        def __init__(self, model: list[str]) -> None:
            super().__init__()
            self.model = model

        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint and self.model[0]:
                probe.painted[self.model[0]].append(time.monotonic())
            return False

    def instrument(side: ChatSide) -> PaintFilter:
        model = [""]
        original_append = side.view.append_text

        def append_text(text: str) -> None:
            original_append(text)
            probe.inserted[model[0]].append(time.monotonic())

        side.view.append_text = append_text  # type: ignore[method-assign]
        paint_filter = PaintFilter(model)
        side.view.viewport().installEventFilter(paint_filter)
        return paint_filter

    filters = [instrument(pane.left), instrument(pane.right)]

    def beat() -> None:
        now = time.monotonic()
        if probe.streaming:
            probe.gaps.append(now - probe.last_beat)
        probe.last_beat = now
        if probe.streaming and not pane.busy:
            probe.streaming = False
            spin.quit()

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(beat)
    timer.start()
    give_up = QTimer(singleShot=True, interval=120_000)
    give_up.timeout.connect(spin.quit)

    def chat(prompt: str, compare: bool) -> None:
        for side, filt, model in ((pane.left, filters[0], TUNED), (pane.right, filters[1], BASE)):
            filt.model[0] = model
            side.clear()
        if compare:
            pane.compare(TUNED, BASE)
        else:
            pane.compare_box.setChecked(False)
            pane.model_combo.setCurrentText(TUNED)
        pane.prompt_edit.setPlainText(prompt)
        probe.streaming = True
        probe.last_beat = time.monotonic()
        pane.send()
        give_up.start()
        spin.exec()
        give_up.stop()

    runs: dict[str, Any] = {}
    for name, compare in (("warm-up", False), ("single", False), ("compare", True)):
        # The warm-up imports httpx and opens the connection (the app does it on first use).
        pane.max_tokens_edit.setText("5" if name == "warm-up" else "")
        for store in (probe.parsed, probe.inserted, probe.painted):
            store.clear()
        probe.gaps, probe.collections = [], []
        started, cpu = time.monotonic(), time.process_time()
        chat(f"tell me a long story ({name})", compare)
        runs[name] = {
            "seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu,
            "gaps": probe.gaps,
            "collections": probe.collections,
            "parsed": dict(probe.parsed),
            "inserted": dict(probe.inserted),
            "painted": dict(probe.painted),
        }
    timer.stop()
    pane.shut_down()
    remove_event_loop(loop, *connection.closing_work())
    assert server.stdin is not None and server.stdout is not None
    server.stdin.close()
    written_all: dict[str, list[float]] = json.loads(server.stdout.read().strip().splitlines()[-1])
    server.wait(timeout=30)
    report: dict[str, Any] = {"tokens": TOKENS, "token_delay_s": TOKEN_DELAY_S}
    for name, run in runs.items():
        # The stand-in's record holds every answer in order: take each run's share of it.
        written = {
            model: times[: len(run["inserted"].get(model, []))]
            for model, times in written_all.items()
        }
        for model, times in written.items():
            del written_all[model][: len(times)]
        if name != "warm-up":
            report[name] = summarise(run, written, name == "compare")
    report["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(report))


def summarise(
    run: dict[str, Any], written: dict[str, list[float]], compare: bool
) -> dict[str, Any]:
    """The figures of one run, pairing the k-th token written with the k-th inserted."""
    arrival: list[float] = []
    parse: list[float] = []
    paint: list[float] = []
    to_paint: list[float] = []
    for model in (TUNED, BASE) if compare else (TUNED,):
        inserted, parsed = run["inserted"][model], run["parsed"][model]
        sent = written[model]
        assert len(inserted) == TOKENS == len(sent) == len(parsed), (model, len(inserted))
        arrival += [done - out for out, done in zip(sent, inserted, strict=True)]
        parse += [done - got for got, done in zip(parsed, inserted, strict=True)]
        waits = painted_after(inserted, run["painted"][model])
        paint += waits
        to_paint += [
            done - out + wait for out, done, wait in zip(sent, inserted, waits, strict=False)
        ]
    gaps_ms = sorted(gap * 1000 for gap in run["gaps"])
    return {
        "seconds": run["seconds"],
        "cpu_seconds": run["cpu_seconds"],  # the window's process, all of it
        "max_gap_ms": gaps_ms[-1],
        "p99_gap_ms": percentile(gaps_ms, 0.99),
        "beats": len(gaps_ms),
        "gc_runs": len(run["collections"]),
        "gc_max_ms": max(run["collections"], default=0.0) * 1000,
        "arrival_to_document": figures(arrival),
        "parse_to_document": figures(parse),
        "document_to_paint": figures(paint) if paint else None,
        "arrival_to_paint": figures(to_paint) if to_paint else None,
        "painted_tokens": len(paint),
    }


def painted_after(inserted: list[float], painted: list[float]) -> list[float]:
    """For each insert, the wait until the first paint that began after it."""
    waits, index = [], 0
    for moment in inserted:
        while index < len(painted) and painted[index] < moment:
            index += 1
        if index == len(painted):
            break
        waits.append(painted[index] - moment)
    return waits


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        main()
