"""Shared fixtures: a fresh data folder and database per test, the real datasets, no leftovers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ollama_server import ollama_server  # noqa: F401  (fixture)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh, private data folder; MTM_HOME points at it for code that reads the environment."""
    from app.paths import DataHome

    root = tmp_path / "mtm-home"
    monkeypatch.setenv("MTM_HOME", str(root))
    return DataHome(root).ensure()


@pytest.fixture
def database(home):  # type: ignore[no-untyped-def]
    """The migrated database inside `home`, closed after the test."""
    from app.db import open_database

    db = open_database(home.database, home.backups)
    yield db
    db.close()


@pytest.fixture
def context(home):  # type: ignore[no-untyped-def]
    """The app opened on `home` (logs, migrated database, settings), closed after the test."""
    from app.context import AppContext

    ctx = AppContext.open(home.root)
    yield ctx
    ctx.close()


def run_app(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS` in a subprocess, offscreen, on the data folder `home`."""
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "MTM_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def real_data(tmp_path: Path) -> Path:
    """A writable copy of ../shared/data/real (the originals are read-only)."""
    if not REAL_DATA.is_dir():
        pytest.fail(f"the real datasets are missing: expected them in {REAL_DATA}")
    target = tmp_path / "real"
    shutil.copytree(REAL_DATA, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    """A test that leaves a thread running fails (Qt's own pool threads are checked in ui tests)."""
    before = set(threading.enumerate())
    yield
    leftovers = [
        t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
    ]
    for thread in leftovers:
        thread.join(timeout=5)
    still = [t.name for t in leftovers if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture(autouse=True)
def _no_leftover_event_loop() -> Iterator[None]:
    """The qasync loop a test's window installed is closed after it, with its tasks cancelled."""
    yield
    import asyncio

    import qasync

    loop = asyncio.events._get_running_loop()
    if isinstance(loop, qasync.QEventLoop):
        from ui.async_tasks import remove_event_loop

        remove_event_loop(loop)


@pytest.fixture
def ollama_connection(qapp, ollama_server):  # type: ignore[no-untyped-def]  # noqa: F811
    """The window's Ollama connection, on the qasync loop, pointed at the stand-in server and
    checking its status every 200 ms; its clients are closed after the test."""
    from ui.async_tasks import install_event_loop, remove_event_loop
    from ui.ollama_connection import OllamaConnection

    loop = install_event_loop(qapp)
    connection = OllamaConnection(ollama_server.url, interval_ms=200)
    yield connection
    remove_event_loop(loop, *connection.closing_work())


# -- the OS keyring and the window's TaskRunner, for the tests that need them ----------------


def _memory_keyring_class():  # type: ignore[no-untyped-def]
    from keyring.backend import KeyringBackend

    class MemoryKeyring(KeyringBackend):
        """An OS keyring stand-in that keeps passwords in a dict."""

        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.passwords: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.passwords.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.passwords[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            from keyring.errors import PasswordDeleteError

            if self.passwords.pop((service, username), None) is None:
                raise PasswordDeleteError("no such password")

    return MemoryKeyring


def _use_keyring(backend):  # type: ignore[no-untyped-def]
    import keyring

    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


@pytest.fixture
def memory_keyring():  # type: ignore[no-untyped-def]
    """A keyring in memory, never this machine's own."""
    yield from _use_keyring(_memory_keyring_class()())


@pytest.fixture
def no_keyring():  # type: ignore[no-untyped-def]
    """keyring's own fail backend: what a headless Linux box without Secret Service has."""
    from keyring.backends.fail import Keyring as NoKeyring

    yield from _use_keyring(NoKeyring())


@pytest.fixture
def runner(qtbot):  # type: ignore[no-untyped-def]
    """The window's TaskRunner; every task it was given has finished when the test ends."""
    from app.workers.background import TaskRunner

    tasks = TaskRunner()
    yield tasks
    qtbot.waitUntil(lambda: not tasks.busy, timeout=60_000)
    assert tasks.shutdown(), "background work did not finish"
