"""The window's one connection to Ollama: the client for the configured URL, and whether the
server answers, checked on a timer and shown in the status bar.

Every call runs on the qasync loop (ui.async_tasks); nothing here blocks the window.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QWidget

from app.ollama.client import OllamaClient, normalise_url
from app.ollama.versions import upgrade_advice
from app.workers.background import TaskFailure
from ui.async_tasks import AsyncTasks

# How often the status is checked: often enough to notice Ollama starting, cheap for the server.
CHECK_INTERVAL_MS = 5000


@dataclass(frozen=True)
class OllamaState:
    url: str
    version: str | None  # None while Ollama does not answer, or answers unusably
    message: str  # one sentence: what the status bar says in full

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
        self._retired: list[OllamaClient] = []
        self.state: OllamaState | None = None
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
        self.check_now()
        self._timer.start()

    def set_url(self, url: str) -> None:
        """Talk to another server from now on (the Settings tab saved a new URL)."""
        url = normalise_url(url)
        if url == self._url:
            return
        if self._client is not None:
            self._retired.append(self._client)
        self._url, self._client = url, None
        self.state = None
        self.check_now()

    def check_now(self) -> None:
        if self._tasks.busy:  # a check is on its way; a slow server is not asked twice
            return
        client = self.client
        self._tasks.start(
            client.check(),
            on_success=lambda version: self._set_state(client, version, None),
            on_error=lambda failure: self._set_state(client, None, failure),
        )

    def _set_state(
        self, client: OllamaClient, version: str | None, failure: TaskFailure | None
    ) -> None:
        if client is not self._client:
            return  # the answer of a server no longer configured
        if failure is not None:
            state = OllamaState(client.base_url, None, failure.message)
        else:
            advice = upgrade_advice(version or "", client.base_url)
            text = f"Ollama {version} is running at {client.base_url}."
            state = OllamaState(client.base_url, version, f"{text} {advice}" if advice else text)
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def closing_work(self) -> list[Coroutine[Any, Any, None]]:
        """The coroutines that close the clients (the app runs them before its loop closes)."""
        self._timer.stop()
        self._tasks.cancel_all()
        clients = [*self._retired, *([self._client] if self._client else [])]
        self._retired, self._client = [], None
        return [client.aclose() for client in clients]


class OllamaStatusLabel(QLabel):
    """The status bar's word on Ollama: connected with its version, or how to start it."""

    def __init__(self, connection: OllamaConnection, parent: QWidget | None = None) -> None:
        super().__init__("Ollama: checking…", parent)
        connection.state_changed.connect(self.show_state)

    def show_state(self, state: OllamaState) -> None:
        if state.connected:
            self.setText(f"<span style='color:#16a34a'>●</span> Ollama {state.version}")
        else:
            self.setText("<span style='color:#dc2626'>●</span> Ollama not running")
        self.setToolTip(state.message)
