"""Controlling pools that run in other processes, through files in the data folder.

- `jobs/.paused`: while it exists, no pool on this data folder starts a job (running ones go on).
  The window's Pause button and `mtm worker pause` both write it, so they agree.
- `jobs/.workers/<pid>.json`: each running pool's state (its slots and what they do), written
  when it changes and removed when the pool stops; `mtm worker status` reads them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.paths import DataHome

PAUSE_FILE = ".paused"
STATE_FOLDER = ".workers"


@dataclass(frozen=True)
class PoolState:
    pid: int
    name: str
    paused: bool
    max_workers: int
    slots: list[dict[str, Any]] = field(default_factory=list)


def pause_path(home: DataHome) -> Path:
    return home.jobs / PAUSE_FILE


def set_paused(home: DataHome, paused: bool) -> None:
    marker = pause_path(home)
    if paused:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("paused\n", encoding="ascii")
    else:
        marker.unlink(missing_ok=True)


def is_paused(home: DataHome) -> bool:
    return pause_path(home).exists()


def write_state(home: DataHome, state: PoolState) -> None:
    """Replace this pool's state file atomically."""
    folder = home.jobs / STATE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".state-")
    with os.fdopen(handle, "wb") as file:
        file.write(orjson.dumps(asdict(state)))
    os.replace(temporary, folder / f"{state.pid}.json")


def remove_state(home: DataHome, pid: int) -> None:
    (home.jobs / STATE_FOLDER / f"{pid}.json").unlink(missing_ok=True)


def read_states(home: DataHome) -> list[PoolState]:
    """The states of the pools that are running now (files of dead pools are removed)."""
    from app.jobs.service import process_alive

    states: list[PoolState] = []
    for path in sorted((home.jobs / STATE_FOLDER).glob("*.json")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError, TypeError):
            state = PoolState(**orjson.loads(path.read_bytes()))
            if process_alive(state.pid, None):
                states.append(state)
            else:
                path.unlink(missing_ok=True)
    return states
