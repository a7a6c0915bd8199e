"""The window's one connection to Ollama: the client for the configured URL, and whether the
server answers, checked on a timer and shown in the status bar.

Every call runs on the qasync loop (ui.async_tasks); nothing here blocks the window.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QWidget

from app.errors import KnownError
from app.ollama.client import OllamaClient, normalise_url
from app.ollama.errors import OllamaTooOld
from app.ollama.versions import upgrade_advice
from ui.async_tasks import AsyncTasks

# How often the status is checked: often enough to notice Ollama starting, cheap for the server.
CHECK_INTERVAL_MS = 5000
# A status check waits this long for an answer; the client for real work waits minutes (a model
# load comes before the first byte), which would leave the status bar stale meanwhile.
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class OllamaState:
    url: str
    version: str | None  # None while Ollama does not answer, or answers unusably
    message: str  # one sentence: what the status bar says in full
    too_old: bool = False  # it answers, but is older than the app can work with

    @property
    def connected(self) -> bool:
        return self.version is not None


class OllamaConnection(QObject):
    """Owns the OllamaClient of the configured URL; `state_changed(OllamaState)` when Ollama
    comes up, goes down or changes version."""

    state_changed = Signal(object)

    def __init__(
        self, url: str, parent: QObject | None = None, interval_ms: int = CHECK_INTERVAL_MS
    ) -> None:
        super().__init__(parent)
        self._tasks = AsyncTasks(self)
        self._url = normalise_url(url)
        # Made on first use: httpx is not imported before the window has painted.
        self._client: OllamaClient | None = None
        self._checker: OllamaClient | None = None
        self._retired: list[OllamaClient] = []
        self.state: OllamaState | None = None
        self._stopped = False
        self._timer = QTimer(self, interval=interval_ms)
        self._timer.timeout.connect(self.check_now)

    @property
    def client(self) -> OllamaClient:
        if self._client is None:
            self._client = OllamaClient(self._url)
        return self._client

    @property
    def url(self) -> str:
        return self._url

    def start(self) -> None:
        self._stopped = False
        self.check_now()
        self._timer.start()

    def stop(self) -> None:
        """No more checks (the window is closing); the clients stay until closing_work()."""
        self._stopped = True
        self._timer.stop()
        self._tasks.cancel_all()

    def set_url(self, url: str) -> None:
        """Talk to another server from now on (the Settings tab saved a new URL)."""
        url = normalise_url(url)
        if url == self._url:
            return
        self._tasks.cancel_all()  # a check of the old URL is no news about the new one
        self._retired += [c for c in (self._client, self._checker) if c is not None]
        self._url, self._client, self._checker = url, None, None
        self.state = None
        self.check_now()

    def check_now(self) -> None:
        if self._stopped:
            return
        if self._tasks.busy:  # a check is on its way; a slow server is not asked twice
            return
        self._tasks.start(self._check(), on_success=self._set_state)

    async def _check(self) -> tuple[OllamaClient, OllamaState]:
        if self._checker is None:
            # Imports and TLS set-up (httpx loads the CA bundle for every client) take a few
            # hundred milliseconds: they happen in a worker thread, not on the GUI thread.
            url = self._url
            checker, client = await asyncio.to_thread(_make_clients, url, self._client is None)
            if url != self._url:  # the URL changed meanwhile: these are for the old one
                self._retired += [c for c in (checker, client) if c is not None]
                raise asyncio.CancelledError
            self._checker = checker
            self._client = self._client or client
        client = self._checker
        return client, await _check(client)

    def _set_state(self, answer: tuple[OllamaClient, OllamaState]) -> None:
        client, state = answer
        if client is not self._checker:
            return  # the answer of a server no longer configured
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def closing_work(self) -> list[Coroutine[Any, Any, None]]:
        """The coroutines that close the clients (the app runs them before its loop closes)."""
        self._timer.stop()
        self._tasks.cancel_all()
        clients = [*self._retired, *(c for c in (self._client, self._checker) if c is not None)]
        self._retired, self._client, self._checker = [], None, None
        return [client.aclose() for client in clients]


# httpx, and what its first request imports on the spot (its async backend on anyio): a few
# hundred milliseconds of imports that must not happen on the GUI thread.
_HTTP_STACK = ("httpx", "httpcore._backends.anyio", "anyio._backends._asyncio")


def _make_clients(url: str, with_client: bool) -> tuple[OllamaClient, OllamaClient | None]:
    """The status checker (short timeout) and, if asked, the client for real work."""
    for module in _HTTP_STACK:
        importlib.import_module(module)
    checker = OllamaClient(url, read_timeout=CHECK_TIMEOUT_S)
    return checker, OllamaClient(url) if with_client else None


async def _check(client: OllamaClient) -> OllamaState:
    """The server's state, told in one sentence whatever happens."""
    url = client.base_url
    try:
        version = await client.check()
    except OllamaTooOld as error:
        return OllamaState(url, None, error.message, too_old=True)
    except KnownError as error:
        return OllamaState(url, None, error.message)
    advice = upgrade_advice(version, url)
    text = f"Ollama {version} is running at {url}."
    return OllamaState(url, version, f"{text} {advice}" if advice else text)


class OllamaStatusLabel(QLabel):
    """The status bar's word on Ollama: connected with its version, or how to start it."""

    def __init__(self, connection: OllamaConnection, parent: QWidget | None = None) -> None:
        super().__init__("Ollama: checking…", parent)
        connection.state_changed.connect(self.show_state)

    def show_state(self, state: OllamaState) -> None:
        if state.connected:
            self.setText(f"<span style='color:#16a34a'>●</span> Ollama {state.version}")
        elif state.too_old:
            self.setText("<span style='color:#d97706'>●</span> Ollama too old: update it")
        else:
            self.setText(
                "<span style='color:#dc2626'>●</span> Ollama not running: start it with "
                "<code>ollama serve</code>"
            )
        self.setToolTip(state.message)
