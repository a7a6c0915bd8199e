"""The trainer's event lines, read back out of a Ray job's driver log.

The driver log mixes the trainer's JSON event lines with Ray's own lines and whatever reached
stderr; WebSocket frames can end mid-line. The decoder buffers the partial line, parses complete
lines with app.events (the same parser the local workers use) and skips the rest, keeping the
last few of those for an error message.

Events carry no sequence number, and both the log tail and the full log start at the log's
beginning, so a reconnect catches up by skipping the first N events already delivered.

A resume or retry reuses the job's id, and the head appends each run to the same log file
(`job-driver-<id>.log`), after a line `Running entrypoint for job <id>: <entrypoint>`. Each run's
entrypoint is made unique (app.executors.ray), so the decoder, given the current run's line,
ignores every earlier run's lines and counts the current run's events from its own start.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator

from app.events import BadEventError, Event, parse_event

log = logging.getLogger(__name__)

_KEPT_LINES = 20  # other lines remembered for a failure's message
_MAX_LINE_CHARS = 8 * 1024 * 1024  # a longer "line" is not the trainer's: drop it


RUN_LINE_PREFIX = "Running entrypoint for job "  # what the head writes as a run starts


def run_line(job_id: str, entrypoint: str) -> str:
    """The line the head writes into the job's log as the run with `entrypoint` starts."""
    return f"{RUN_LINE_PREFIX}{job_id}: {entrypoint}"


class LogEventDecoder:
    """Feed it the log as it arrives; it returns the new events, in order, once each.

    With `current_run` (the run_line of the run wanted), the lines of earlier runs of the same
    job are left out: those after another run's line, until the current run's line.
    """

    def __init__(self, skip: int = 0, current_run: str | None = None) -> None:
        self._skip = skip  # events delivered before: counted, not returned again
        self._buffer = ""
        self._current_run = current_run
        self._runs_prefix = current_run.partition(": ")[0] + ": " if current_run else None
        self._earlier_run = False  # within an earlier run's lines
        self.events_seen = 0  # events in the log so far, the skipped ones included
        self.other_lines: deque[str] = deque(maxlen=_KEPT_LINES)

    def feed(self, text: str) -> list[Event]:
        """The events whose lines `text` completes."""
        self._buffer += text
        if "\n" not in text:
            if len(self._buffer) > _MAX_LINE_CHARS:
                self._buffer = ""
            return []
        *complete, self._buffer = self._buffer.split("\n")
        return self._decode(complete)

    def finish(self) -> list[Event]:
        """The end of the log: a last line without a newline still counts."""
        rest, self._buffer = self._buffer, ""
        return self._decode([rest])

    def _decode(self, lines: Iterable[str]) -> list[Event]:
        events: list[Event] = []
        for raw in lines:
            line = raw.rstrip("\r")
            if self._runs_prefix is not None and line.startswith(self._runs_prefix):
                self._start_run(line)
                continue
            if self._earlier_run:
                continue
            event = self._event(line)
            if event is None:
                continue
            self.events_seen += 1
            if self.events_seen > self._skip:
                events.append(event)
        return events

    def _start_run(self, line: str) -> None:
        """A run of the job starts: the current one (count afresh), or an earlier one."""
        self._earlier_run = line != self._current_run
        if not self._earlier_run:
            self.events_seen = 0
            self.other_lines.clear()

    def _event(self, line: str) -> Event | None:
        start = line.find("{")
        if start < 0:
            if line.strip():
                self.other_lines.append(line)
            return None
        try:
            # From the first brace: a stderr write without a newline can run into an event.
            return parse_event(line[start:])
        except BadEventError:
            self.other_lines.append(line)
            return None


def decode_log(
    text: str, skip: int = 0, current_run: str | None = None
) -> tuple[list[Event], LogEventDecoder]:
    """The events in a whole log (GET /logs), after the first `skip`, and the decoder."""
    decoder = LogEventDecoder(skip, current_run)
    events = decoder.feed(text) + decoder.finish()
    return events, decoder


def decode_frames(frames: Iterable[str], decoder: LogEventDecoder) -> Iterator[Event]:
    """The events of a stream of frames, as each frame completes them."""
    for frame in frames:
        yield from decoder.feed(frame)
    yield from decoder.finish()
