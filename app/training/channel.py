"""The event channel: one JSON line per event to the supervising process, and to events.jsonl.

The channel is the trainer's original stdout. `claim_stdout` moves it to a private descriptor and
points descriptor 1 at stderr, so nothing a library prints (progress bars, C-level output) can
ever interleave with the events. When the reader goes away (the supervising process died), the
watcher notices and asks the run to stop, so no orphan trains on.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from app.events import Event, LogEvent, LogLevel, dump_event

StopReason = Literal["cancelled", "interrupted"]
EVENTS_FILE = "events.jsonl"
PROGRESS_INTERVAL_S = 0.25  # at most four progress events a second, however fast steps are
_WATCH_INTERVAL_S = 1.0


class StopRequest:
    """Set by a signal handler or the parent watcher; read by the loop after every step."""

    def __init__(self) -> None:
        self.reason: StopReason | None = None

    def request(self, reason: StopReason) -> None:
        # The first reason wins: a cancel stays a cancel if the parent then goes away.
        if self.reason is None:
            self.reason = reason

    @property
    def requested(self) -> bool:
        return self.reason is not None


class EventChannel:
    """Writes every event to `events.jsonl` and, while its reader is there, to `fd`."""

    def __init__(self, fd: int | None, events_path: Path | None, stop: StopRequest) -> None:
        self._fd = fd
        self._stop = stop
        self._lock = threading.Lock()
        self._file = _open_append(events_path) if events_path else None

    def emit(self, event: Event) -> None:
        line = dump_event(event)
        with self._lock:
            if self._file is not None:
                _write_all(self._file, line)
            fd = self._fd  # once: the watcher thread may drop the reader meanwhile
            if fd is not None:
                self._send(fd, line)

    def lose_reader(self) -> None:
        """The reader is gone: stop writing to it, and stop the run."""
        self._fd = None
        self._stop.request("interrupted")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None

    @property
    def fd(self) -> int | None:
        return self._fd

    def _send(self, fd: int, line: bytes) -> None:
        try:
            _write_all(fd, line)
        except OSError:  # EPIPE where the reader closed its end; EINVAL on Windows
            self.lose_reader()


class ProgressThrottle:
    """Says when the next progress event is due: the first, the last, and a few a second."""

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self._interval = interval_s
        self._last = -float("inf")

    def due(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self._last >= self._interval:
            self._last = now
            return True
        return False


class ChannelLogHandler(logging.Handler):
    """Turns log records (the trainer's, its libraries', warnings) into `log` events."""

    def __init__(self, channel: EventChannel) -> None:
        super().__init__(logging.INFO)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._channel.emit(LogEvent(level=_level(record.levelno), message=self.format(record)))
        except Exception:  # a log line must never take the run down
            self.handleError(record)


def claim_stdout() -> int:
    """Move the channel (stdout) to a private descriptor; descriptor 1 then writes to stderr."""
    sys.stdout.flush()
    channel = os.dup(1)
    os.dup2(2, 1)
    return channel


def watch_reader(channel: EventChannel) -> threading.Thread:
    """Start a daemon thread that calls `channel.lose_reader()` once the reader is gone."""
    thread = threading.Thread(target=_watch, args=(channel,), name="channel-watch", daemon=True)
    thread.start()
    return thread


def _watch(channel: EventChannel) -> None:
    fd = channel.fd
    parent = os.getppid()
    poller = _poller(fd)
    while channel.fd is not None:
        if poller is not None and poller.poll(_WATCH_INTERVAL_S * 1000):
            break  # POLLERR or POLLHUP: the read end of the pipe closed
        if poller is None:
            time.sleep(_WATCH_INTERVAL_S)
        if os.getppid() != parent:  # re-parented: the supervisor died (POSIX)
            break
    channel.lose_reader()


def _poller(fd: int | None) -> select.poll | None:
    # Registering no events still reports POLLERR and POLLHUP, the only ones wanted here.
    if fd is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, 0)
    return poller


def _open_append(path: Path) -> int:
    # O_APPEND makes each line one atomic append, even beside another writer.
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _level(number: int) -> LogLevel:
    if number >= logging.ERROR:
        return "error"
    if number >= logging.WARNING:
        return "warning"
    return "info" if number >= logging.INFO else "debug"
