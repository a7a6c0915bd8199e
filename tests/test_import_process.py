"""Imports in a child process: same result and errors as in-process, cancel, and a killed child."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest

from app.datasets.import_process import import_in_child
from app.datasets.importer import ImportCancelled, ImportOptions
from app.datasets.repository import list_datasets
from app.errors import KnownError


def _big_file(tmp_path, rows=300_000):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"instruction": "repeat after me " * 4, "output": "words " * 30})
    path.write_text((line + "\n") * rows)
    return path


def test_child_import_matches_the_real_dataset(database, home, real_data):
    seen = []
    dataset = import_in_child(
        database, home, real_data / "v1_sft_demo.jsonl", ImportOptions(), progress=seen.append
    )
    assert (dataset.format, dataset.rows) == ("messages", 500)
    assert [d.id for d in list_datasets(database)] == [dataset.id]
    assert seen and seen[-1].records == 500


def test_child_reports_bad_input_in_its_sentence(database, home, tmp_path):
    bad = tmp_path / "empty.json"
    bad.write_text("")
    with pytest.raises(KnownError) as raised:
        import_in_child(database, home, bad, ImportOptions())
    assert "empty.json" in raised.value.message
    assert list_datasets(database) == []
    assert list(home.datasets.iterdir()) == []


def test_cancel_stops_the_child_and_keeps_nothing(database, home, tmp_path):
    path = _big_file(tmp_path)
    started = threading.Event()

    def progress(_update):
        started.set()

    with pytest.raises(ImportCancelled):
        import_in_child(
            database, home, path, ImportOptions(), progress=progress, cancelled=started.is_set
        )
    assert list_datasets(database) == []
    assert list(home.datasets.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the child through /proc")
def test_a_killed_child_is_a_clear_error_and_leaves_nothing(database, home, tmp_path):
    path = _big_file(tmp_path)

    def kill_on_first_progress(_update):
        for pid in _children():
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(KnownError) as raised:
        import_in_child(database, home, path, ImportOptions(), progress=kill_on_first_progress)
    assert "nothing was kept" in raised.value.message
    assert list_datasets(database) == []
    assert list(home.datasets.iterdir()) == []


def _children() -> list[int]:
    task_dir = f"/proc/{os.getpid()}/task"
    pids: list[int] = []
    for task in os.listdir(task_dir):
        with open(f"{task_dir}/{task}/children", encoding="ascii") as children:
            pids.extend(int(pid) for pid in children.read().split())
    return pids


def test_inspection_in_the_child_matches_in_process(home, real_data, tmp_path):
    from app.datasets.import_process import inspect_in_child
    from app.datasets.importer import inspect_file

    path = real_data / "glaive_toolcall_en_demo.json"
    assert inspect_in_child(home, path, ImportOptions()) == inspect_file(path, ImportOptions())
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(KnownError) as raised:
        inspect_in_child(home, missing, ImportOptions())
    assert "nowhere.jsonl" in raised.value.message
