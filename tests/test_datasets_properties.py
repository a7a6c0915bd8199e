"""Property tests: whatever the bytes, an import succeeds or fails cleanly with BadInputError."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.datasets import (
    ImportOptions,
    dataset_files,
    delete_dataset,
    import_dataset,
    inspect_file,
    list_datasets,
)
from app.db import Database
from app.errors import BadInputError
from app.paths import DataHome

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID_JSONL = b"".join(
    orjson.dumps({"instruction": f"q{i}", "input": "", "output": f"a \u00e9 {i}"}) + b"\n"
    for i in range(8)
)
VALID_JSON = orjson.dumps(
    [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 4,
    option=orjson.OPT_INDENT_2,
)
VALID_CSV = b'question,answer\nWhy?,"Because,\nreasons."\nHow?,Like this\nWho?,Me\n'
VALID = {".jsonl": VALID_JSONL, ".json": VALID_JSON, ".csv": VALID_CSV}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file, cut short, with bytes flipped, inserted or deleted."""
    suffix = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[suffix])
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        byte = draw(st.integers(0, 255))
        if action == "flip" and data:
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        elif action == "delete" and data:
            del data[position]
        elif action == "truncate":
            del data[position:]
    return suffix, bytes(data)


def check_outcome(database: Database, home: DataHome, path: Path, options: ImportOptions) -> None:
    """Import `path`: success leaves one dataset, failure (BadInputError only) leaves nothing."""
    try:
        dataset = import_dataset(database, home, path, options)
    except BadInputError as error:
        assert error.message.endswith(".")
        assert "\n" not in error.message
        assert list_datasets(database) == []
        assert list(home.datasets.iterdir()) == []
        return
    files = dataset_files(home, dataset)
    assert files.records.is_file() and files.source.is_file() and files.split.is_file()
    records = files.records.read_bytes().splitlines()
    assert len(records) == dataset.rows == len(files.source.read_bytes().splitlines())
    assert files.original.read_bytes() == path.read_bytes()
    delete_dataset(database, home, dataset.id)
    assert list(home.datasets.iterdir()) == []


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


@SETTINGS
@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=300), skip=st.booleans())
def test_random_bytes(
    database: Database, home: DataHome, scratch: Path, suffix: str, content: bytes, skip: bool
) -> None:
    path = scratch / f"random{suffix}"
    path.write_bytes(content)
    check_outcome(database, home, path, ImportOptions(skip_invalid=skip))
    _inspect_never_crashes(path)


@SETTINGS
@given(case=mutated(), skip=st.booleans())
def test_mutated_valid_files(
    database: Database, home: DataHome, scratch: Path, case: tuple[str, bytes], skip: bool
) -> None:
    suffix, content = case
    path = scratch / f"mutated{suffix}"
    path.write_bytes(content)
    check_outcome(database, home, path, ImportOptions(skip_invalid=skip))
    _inspect_never_crashes(path)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(
    [
        "instruction",
        "input",
        "output",
        "system",
        "history",
        "conversations",
        "messages",
        "tools",
        "prompt",
        "completion",
        "response",
        "text",
        "from",
        "value",
        "role",
        "content",
    ]
)
json_records = st.dictionaries(field_names, json_values | st.text(max_size=20), max_size=5)


@SETTINGS
@given(
    records=st.lists(json_records | json_values, min_size=0, max_size=6),
    as_array=st.booleans(),
    skip=st.booleans(),
    fmt=st.sampled_from([None, "alpaca", "sharegpt", "messages", "prompt_completion", "text"]),
)
def test_random_json_structures(
    database: Database,
    home: DataHome,
    scratch: Path,
    records: list[object],
    as_array: bool,
    skip: bool,
    fmt: str | None,
) -> None:
    if as_array:
        path = scratch / "records.json"
        path.write_bytes(orjson.dumps(records))
    else:
        path = scratch / "records.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    check_outcome(database, home, path, ImportOptions(skip_invalid=skip, format=fmt))


def _inspect_never_crashes(path: Path) -> None:
    with contextlib.suppress(BadInputError):
        inspect_file(path)


def test_fixture_files_are_valid(database: Database, home: DataHome, scratch: Path) -> None:
    for suffix, content in VALID.items():
        path = scratch / f"valid{suffix}"
        path.write_bytes(content)
        dataset = import_dataset(database, home, path)
        assert dataset.rows in (3, 4, 8)
    shutil.rmtree(scratch)
