"""Listing, finding, renaming, re-splitting and deleting datasets; paging through records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import orjson
import pytest

from app.datasets import (
    RecordPager,
    cleanup_staging,
    dataset_files,
    delete_dataset,
    get_dataset,
    import_dataset,
    list_datasets,
    rename_dataset,
    set_split,
)
from app.datasets.importer import ImportOptions
from app.db import Database
from app.errors import BadInputError, ConflictError, NotFoundError
from app.paths import DataHome


def test_list_newest_first_and_get(database: Database, home: DataHome, real_data: Path) -> None:
    first = import_dataset(database, home, real_data / "identity.json")
    second = import_dataset(database, home, real_data / "c4_demo.jsonl")
    assert [d.id for d in list_datasets(database)] == [second.id, first.id]
    assert get_dataset(database, first.id).name == "identity"
    assert get_dataset(database, "c4_demo").id == second.id
    assert get_dataset(database, second.id[:5]).id == second.id
    with pytest.raises(NotFoundError, match="mtm datasets list"):
        get_dataset(database, "nothing")
    with pytest.raises(NotFoundError):
        get_dataset(database, first.id[:3])  # prefixes shorter than 4 are not enough


def test_rename(database: Database, home: DataHome, real_data: Path) -> None:
    first = import_dataset(database, home, real_data / "identity.json")
    second = import_dataset(database, home, real_data / "c4_demo.jsonl")
    assert rename_dataset(database, first.id, "  Who am I  ").name == "Who am I"
    assert get_dataset(database, "Who am I").id == first.id
    with pytest.raises(ConflictError, match="already called"):
        rename_dataset(database, second.id, "Who am I")
    with pytest.raises(BadInputError):
        rename_dataset(database, second.id, "   ")
    assert rename_dataset(database, first.id, "Who am I").name == "Who am I"


def test_delete_removes_row_and_folder(database: Database, home: DataHome, real_data: Path) -> None:
    dataset = import_dataset(database, home, real_data / "identity.json")
    delete_dataset(database, home, dataset.id)
    assert list_datasets(database) == []
    assert list(home.datasets.iterdir()) == []
    with pytest.raises(NotFoundError):
        delete_dataset(database, home, dataset.id)


def test_set_split(database: Database, home: DataHome, real_data: Path) -> None:
    dataset = import_dataset(database, home, real_data / "alpaca_en_demo.json")
    updated = set_split(database, home, dataset.id, 0.25, 3)
    assert (updated.validation_fraction, updated.split_seed, updated.validation_rows) == (
        0.25,
        3,
        250,
    )
    split = json.loads(dataset_files(home, dataset).split.read_text())
    assert split["seed"] == 3 and len(split["validation_indices"]) == 250
    again = set_split(database, home, dataset.id, 0.25, 3)
    assert json.loads(dataset_files(home, again).split.read_text()) == split
    assert get_dataset(database, dataset.id).stats["validation_rows"] == 250
    with pytest.raises(BadInputError):
        set_split(database, home, dataset.id, -0.1, 3)
    assert [
        p.name for p in dataset_files(home, dataset).folder.iterdir() if p.name.startswith(".")
    ] == []


def test_cleanup_staging(home: DataHome) -> None:
    stale = home.datasets / ".staging-dead"
    stale.mkdir()
    (stale / "records.jsonl").write_text("{}")
    dead_owner = home.datasets / ".staging-gone"
    dead_owner.mkdir()
    (dead_owner / "owner.pid").write_text("999999999")
    live = home.datasets / ".staging-live"
    live.mkdir()
    (live / "owner.pid").write_text(str(os.getpid()))
    keep = home.datasets / "0123456789ab"
    keep.mkdir()
    assert cleanup_staging(home) == 2
    assert sorted(p.name for p in home.datasets.iterdir()) == [".staging-live", "0123456789ab"]


def test_pager_pages_through_records(database: Database, home: DataHome, real_data: Path) -> None:
    dataset = import_dataset(database, home, real_data / "identity.json")
    pager = RecordPager(dataset_files(home, dataset).records)
    pages = [pager.read(40), pager.read(40)]
    assert [len(page) for page in pages] == [40, 40]
    assert not pager.at_end
    assert len(pager.read(40)) == 11
    assert pager.at_end
    assert pager.read(40) == []
    assert pages[0][0]["messages"][0]["content"] == "hi"


def test_pager_is_fast_on_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = orjson.dumps({"text": "x" * 100}) + b"\n"
    path.write_bytes(line * 200_000)
    started = time.perf_counter()
    pager = RecordPager(path)
    records = pager.read(100)
    assert len(records) == 100 and not pager.at_end
    assert time.perf_counter() - started < 0.05


def test_pager_skips_blank_lines_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}')
    pager = RecordPager(path)
    assert pager.read(5) == [{"a": 1}, {"a": 2}]
    assert pager.at_end
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert RecordPager(empty).read(3) == []


def test_dataset_files(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\nb\n")
    dataset = import_dataset(database, home, path, ImportOptions(name="texts"))
    files = dataset_files(home, dataset)
    assert files.original.name == "original.txt"
    for file in (files.records, files.source, files.original, files.split):
        assert file.is_file()
