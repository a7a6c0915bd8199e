"""Files that cannot be imported: one sentence naming the file and the place; nothing kept."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from app.datasets import ImportOptions, import_dataset, inspect_file, list_datasets
from app.db import Database
from app.errors import BadInputError
from app.paths import DataHome


def assert_one_sentence(message: str, *parts: str) -> None:
    assert message.endswith("."), message
    assert "\n" not in message, message
    # A sentence ends at a full stop followed by a capital: there must be none inside.
    assert not re.search(r"[.!?]\s+[A-Z]", message[:-1]), message
    for part in parts:
        assert part in message, (part, message)


def import_fails(
    database: Database, home: DataHome, path: Path, options: ImportOptions | None = None
) -> str:
    with pytest.raises(BadInputError) as caught:
        import_dataset(database, home, path, options or ImportOptions())
    assert list_datasets(database) == []
    assert list(home.datasets.iterdir()) == []
    return caught.value.message


def write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_missing_file(database: Database, home: DataHome, tmp_path: Path) -> None:
    message = import_fails(database, home, tmp_path / "nope.jsonl")
    assert_one_sentence(message, "nope.jsonl", "does not exist")


def test_directory(database: Database, home: DataHome, tmp_path: Path) -> None:
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert_one_sentence(import_fails(database, home, folder), "folder.jsonl", "folder")


def test_unreadable_file(database: Database, home: DataHome, tmp_path: Path) -> None:
    import os

    path = write(tmp_path / "secret.jsonl", '{"text": "x"}\n')
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read anything")
        assert_one_sentence(import_fails(database, home, path), "secret.jsonl", "cannot be read")
    finally:
        path.chmod(0o644)


def test_unknown_extension(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "notes.docx", "x")
    assert_one_sentence(import_fails(database, home, path), "notes.docx", "JSON Lines")


def test_empty_file(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "empty.jsonl", b"")
    assert_one_sentence(import_fails(database, home, path), "empty.jsonl", "is empty")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("blank.jsonl", "\n\n  \n"),
        ("array.json", "[]"),
        ("header.csv", "instruction,output\n"),
        ("blank.txt", "\n\n\n"),
    ],
)
def test_no_records(
    database: Database, home: DataHome, tmp_path: Path, name: str, content: str
) -> None:
    message = import_fails(database, home, write(tmp_path / name, content))
    assert_one_sentence(message, name, "no records")


def test_truncated_json(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "cut.json", '[\n  {"text": "a"},\n  {"text": "b')
    message = import_fails(database, home, path)
    assert_one_sentence(message, "cut.json", "line 3", "column", "export it again")


@pytest.mark.parametrize("content", ['{\n  "data": [1]\n}', '"text"', "42", "null"])
def test_json_that_is_not_an_array(
    database: Database, home: DataHome, tmp_path: Path, content: str
) -> None:
    message = import_fails(database, home, write(tmp_path / "object.json", content))
    assert_one_sentence(message, "object.json", "not an array of records")


def test_json_array_of_numbers(database: Database, home: DataHome, tmp_path: Path) -> None:
    message = import_fails(database, home, write(tmp_path / "numbers.json", "[1, 2, 3]"))
    assert_one_sentence(message, "numbers.json", "record 1", "not an object")


def test_jsonl_lines_that_are_not_objects(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = write(tmp_path / "junk.jsonl", "hello\nworld\n")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "junk.jsonl", "line 1", "not valid JSON")


def test_mixed_shapes(database: Database, home: DataHome, tmp_path: Path) -> None:
    lines = [{"instruction": f"q{i}", "output": "a"} for i in range(120)]
    for index in (16, 40, 99):
        del lines[index]["output"]
    path = write(tmp_path / "data.jsonl", b"".join(orjson.dumps(r) + b"\n" for r in lines))
    message = import_fails(database, home, path)
    assert message == (
        "data.jsonl: 3 of 120 records do not match the alpaca format (the first is record 17 "
        "on line 17: missing 'output'); fix them or import with --skip-invalid to skip them."
    )
    assert_one_sentence(message)


def test_mixed_shapes_in_a_json_array_name_the_line(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "data.json",
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"}\n]',
    )
    message = import_fails(database, home, path)
    assert_one_sentence(
        message, "data.json", "1 of 2 records", "record 2 on line 3", "--skip-invalid"
    )


def test_bad_jsonl_line_among_good_ones(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "cut.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "c')
    message = import_fails(database, home, path)
    assert_one_sentence(message, "cut.jsonl", "1 of 3 records", "line 3", "--skip-invalid")


def test_skip_invalid_with_nothing_valid(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = write(tmp_path / "bad.jsonl", '{"instruction": "a", "output": "b"}\n')
    options = ImportOptions(format="sharegpt", skip_invalid=True)
    message = import_fails(database, home, path, options)
    assert_one_sentence(message, "bad.jsonl", "none of its 1 records", "record 1")


def test_not_utf8(database: Database, home: DataHome, tmp_path: Path) -> None:
    # 0x81 is undefined in cp1252 too, so there is no fallback.
    path = write(tmp_path / "latin.csv", b"instruction,output\nq,a\nq,\xff\x81\n")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "latin.csv", "not UTF-8 text", "byte 0xff", "line 3")


def test_damaged_utf8_is_not_read_as_cp1252(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = write(tmp_path / "damaged.jsonl", '{"text": "Grüße"}\n'.encode() + b'{"text": "\xe9"}\n')
    message = import_fails(database, home, path)
    assert_one_sentence(message, "damaged.jsonl", "not UTF-8 text", "byte 0xe9", "line 2")


def test_bad_utf16(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "wide.csv", "instruction,output\nq,a\n".encode("utf-16") + b"\x00")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "wide.csv", "not UTF-16 text")


def test_binary_named_csv(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    message = import_fails(database, home, path)
    assert_one_sentence(message, "image.csv", "looks like a binary file, not CSV")


def test_ragged_csv(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", "instruction,output\nq,a\nq,a,extra\n")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "ragged.csv", "line 3", "3 cells", "2 columns")


def test_unterminated_csv_quote(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "quote.csv", 'instruction,output\nq,"never closed\n')
    message = import_fails(database, home, path)
    assert_one_sentence(message, "quote.csv", "line 2")


def test_missing_mapped_column(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "qa.csv", "question,response\nq,a\n")
    options = ImportOptions(
        format="alpaca", mapping={"instruction": "question", "output": "answer"}
    )
    message = import_fails(database, home, path, options)
    assert_one_sentence(message, "qa.csv", "no column 'answer'", "'question', 'response'")


def test_mapping_an_unknown_field(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "qa.csv", "question,response\nq,a\n")
    options = ImportOptions(format="alpaca", mapping={"answer": "response"})
    assert_one_sentence(import_fails(database, home, path, options), "'answer'", "alpaca")


def test_over_the_size_limit(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "big.jsonl", '{"text": "x"}\n' * 200)
    message = import_fails(database, home, path, ImportOptions(size_limit_bytes=1024))
    assert_one_sentence(message, "big.jsonl", "2.7 KB", "1.0 KB", "Settings")


def test_unknown_format(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", '{"text": "x"}\n')
    message = import_fails(database, home, path, ImportOptions(format="llama"))
    assert_one_sentence(message, "'llama'", "alpaca, sharegpt")


def test_no_detectable_format(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "odd.csv", "colour,size\nred,3\n")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "odd.csv", "'colour', 'size'", "--format", "--map")


def test_bad_options(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", '{"text": "x"}\n')
    assert_one_sentence(import_fails(database, home, path, ImportOptions(name="  ")), "name")
    message = import_fails(database, home, path, ImportOptions(validation_fraction=1.5))
    assert_one_sentence(message, "1.5")


def test_corrupt_parquet(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1")
    message = import_fails(database, home, path)
    assert_one_sentence(message, "broken.parquet", "Parquet")


def test_parquet_without_pyarrow_says_what_this_build_cannot_do(
    database: Database, home: DataHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GUI-only build goes without pyarrow: a Parquet file is refused in one sentence, by
    the first look and the import alike, and nothing is kept."""
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "facts.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "Q?", "output": "A."}]), path)
    for module in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # `import pyarrow` raises ImportError
    expected = (
        "facts.parquet is a Parquet file, and this build of Model Training Manager cannot read "
        "Parquet; export it as JSON Lines or CSV, or use the full build."
    )
    message = import_fails(database, home, path)
    assert message == expected
    assert_one_sentence(message, "facts.parquet", "Parquet", "JSON Lines or CSV", "full build")
    with pytest.raises(BadInputError) as caught:
        inspect_file(path)
    assert caught.value.message == expected


def test_inspect_raises_for_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as caught:
        inspect_file(tmp_path / "gone.csv")
    assert_one_sentence(caught.value.message, "gone.csv")
    write(tmp_path / "empty.csv", b"")
    with pytest.raises(BadInputError):
        inspect_file(tmp_path / "empty.csv")
