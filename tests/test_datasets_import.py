"""Importing files: real datasets, every container, statistics, splits, skipping, cancelling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.datasets import (
    ImportCancelled,
    ImportOptions,
    ImportProgress,
    dataset_files,
    import_dataset,
    inspect_file,
    list_datasets,
)
from app.db import Database
from app.paths import DataHome


def read_jsonl(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def leftovers(home: DataHome) -> list[str]:
    return sorted(p.name for p in home.datasets.iterdir())


# --- the real datasets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "container", "rows"),
    [
        ("alpaca_en_demo.json", "alpaca", "json", 999),
        ("identity.json", "alpaca", "json", 91),
        ("glaive_toolcall_en_demo.json", "sharegpt", "json", 300),
        ("c4_demo.jsonl", "text", "jsonl", 300),
        ("v1_sft_demo.jsonl", "messages", "jsonl", 500),
    ],
)
def test_real_datasets_import(
    database: Database,
    home: DataHome,
    real_data: Path,
    name: str,
    fmt: str,
    container: str,
    rows: int,
) -> None:
    path = real_data / name
    dataset = import_dataset(database, home, path)
    assert (dataset.format, dataset.container, dataset.rows) == (fmt, container, rows)
    assert dataset.invalid_rows == 0
    assert dataset.source_name == name
    assert len(dataset.id) == 12 and all(c in "0123456789abcdef" for c in dataset.id)
    files = dataset_files(home, dataset)
    assert files.original.read_bytes() == path.read_bytes()
    assert files.original.name == f"original.{path.suffix[1:]}"
    assert len(read_jsonl(files.records)) == rows
    assert len(read_jsonl(files.source)) == rows
    split = json.loads(files.split.read_text())
    assert split["seed"] == 42 and split["validation_fraction"] == 0.1
    assert len(split["validation_indices"]) == dataset.validation_rows == round(rows * 0.1)
    assert leftovers(home) == [dataset.id]


def test_glaive_keeps_tools_and_tool_calls(
    database: Database, home: DataHome, real_data: Path
) -> None:
    dataset = import_dataset(database, home, real_data / "glaive_toolcall_en_demo.json")
    first = read_jsonl(dataset_files(home, dataset).records)[0]
    assert isinstance(first["tools"], str) and "search_recipes" in first["tools"]
    roles = [m["role"] for m in first["messages"]]
    assert "tool" in roles
    assert any(m.get("tool_call") for m in first["messages"])
    assert dataset.stats["role_counts"]["tool"] > 0
    assert dataset.stats["records_with_tools"] == 300


def test_v1_sft_keeps_loss_weight_and_joins_parts(
    database: Database, home: DataHome, real_data: Path
) -> None:
    dataset = import_dataset(database, home, real_data / "v1_sft_demo.jsonl")
    first = read_jsonl(dataset_files(home, dataset).records)[0]
    assert first["messages"][0] == {"role": "user", "content": "hi", "loss_weight": 0.0}
    assert first["messages"][1]["loss_weight"] == 1.0
    assert isinstance(first["messages"][1]["content"], str)


def test_source_of_jsonl_is_the_original_lines(
    database: Database, home: DataHome, real_data: Path
) -> None:
    path = real_data / "c4_demo.jsonl"
    dataset = import_dataset(database, home, path)
    files = dataset_files(home, dataset)
    assert files.source.read_bytes() == path.read_bytes()


def test_stats_are_complete(database: Database, home: DataHome, real_data: Path) -> None:
    dataset = import_dataset(database, home, real_data / "alpaca_en_demo.json")
    stats = dataset.stats
    for key in ("rows", "invalid_rows", "empty_rows", "duplicate_rows", "validation_rows"):
        assert stats[key] == getattr(dataset, key)
    assert stats["columns"] == dataset.columns == ["instruction", "input", "output"]
    assert dataset.column_mapping == {
        "instruction": "instruction",
        "input": "input",
        "output": "output",
    }
    assert stats["role_counts"] == {"assistant": 999, "user": 999}
    chars, tokens = stats["characters"], stats["tokens_approx"]
    assert chars["min"] <= chars["p50"] <= chars["p90"] <= chars["p99"] <= chars["max"]
    assert tokens["max"] == -(-chars["max"] // 4)
    histogram = stats["histogram"]
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1
    assert sum(histogram["counts"]) == 999
    assert (
        len(dataset.sha256) == 64
        and dataset.size_bytes == (real_data / "alpaca_en_demo.json").stat().st_size
    )


# --- counting ----------------------------------------------------------------------------------


def test_duplicates_and_empty_records(database: Database, home: DataHome, tmp_path: Path) -> None:
    records = [
        {"instruction": "a", "output": "x"},
        {"instruction": "a", "output": "x"},
        {"instruction": "b", "output": "   "},
        {"instruction": "c", "output": ""},
        {"instruction": "a", "output": "x"},
    ]
    dataset = import_dataset(database, home, write_jsonl(tmp_path / "d.jsonl", records))
    assert (dataset.rows, dataset.duplicate_rows, dataset.empty_rows) == (5, 2, 2)


def test_zero_loss_weight_assistant_counts_as_empty(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "loss_weight": 0},
            ]
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ]
    dataset = import_dataset(database, home, write_jsonl(tmp_path / "m.jsonl", records))
    assert dataset.empty_rows == 1


def test_skip_invalid_counts_and_keeps_source_in_step(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"instruction": "a", "output": "1"}\n'
        b'{"instruction": "b"}\n'
        b"\n"
        b"not json\n"
        b"[1, 2]\n"
        b'{"instruction": "c", "output": "3"}'
    )
    dataset = import_dataset(database, home, path, ImportOptions(skip_invalid=True))
    assert (dataset.rows, dataset.invalid_rows) == (2, 3)
    files = dataset_files(home, dataset)
    assert [s["instruction"] for s in read_jsonl(files.source)] == ["a", "c"]
    assert files.source.read_bytes().endswith(b"\n")
    assert len(read_jsonl(files.records)) == 2


def test_bom_and_blank_lines_in_jsonl(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\r\n\r\n{"text": "two"}\r\n')
    dataset = import_dataset(database, home, path)
    files = dataset_files(home, dataset)
    assert dataset.rows == 2
    assert [r["text"] for r in read_jsonl(files.source)] == ["one", "two"]
    assert files.original.read_bytes() == path.read_bytes()


# --- containers --------------------------------------------------------------------------------


def test_csv_with_suggested_mapping(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\nWhy?,"Because,\nreasons."\nHow?,\n', encoding="utf-8")
    dataset = import_dataset(database, home, path)
    assert (dataset.format, dataset.container, dataset.rows) == ("alpaca", "csv", 2)
    assert dataset.column_mapping == {"instruction": "question", "output": "answer"}
    records = read_jsonl(dataset_files(home, dataset).records)
    assert records[0]["messages"][1]["content"] == "Because,\nreasons."
    assert records[1]["messages"][1]["content"] == ""
    assert dataset.empty_rows == 1


def test_tsv_with_explicit_mapping(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("q\ta\tctx\nWhat?\tThat.\tsome context\n", encoding="utf-8")
    options = ImportOptions(
        format="alpaca", mapping={"instruction": "q", "output": "a", "input": "ctx"}
    )
    dataset = import_dataset(database, home, path, options)
    record = read_jsonl(dataset_files(home, dataset).records)[0]
    assert record["messages"][0]["content"] == "What?\n\nsome context"
    assert dataset.container == "tsv"


def test_mapping_without_format_is_detected(
    database: Database, home: DataHome, tmp_path: Path
) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("x,y\nq,a\n", encoding="utf-8")
    dataset = import_dataset(
        database, home, path, ImportOptions(mapping={"instruction": "x", "output": "y"})
    )
    assert dataset.format == "alpaca"


def test_dolly_style_csv(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "dolly.csv"
    path.write_text(
        "instruction,context,response,category\nSum up,Text here,Short.,summarization\n"
    )
    dataset = import_dataset(database, home, path)
    record = read_jsonl(dataset_files(home, dataset).records)[0]
    assert record["messages"][0]["content"] == "Sum up\n\nText here"
    assert record["messages"][1]["content"] == "Short."


def test_parquet(database: Database, home: DataHome, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "chat.parquet"
    table = pa.table(
        {
            "messages": [
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}],
            ],
            "id": [1, 2],
        }
    )
    pq.write_table(table, path)
    dataset = import_dataset(database, home, path)
    assert (dataset.format, dataset.container, dataset.rows) == ("messages", "parquet", 2)
    assert dataset.columns == ["messages", "id"]
    source = read_jsonl(dataset_files(home, dataset).source)
    assert source[1]["id"] == 2


def test_parquet_with_mapped_columns(database: Database, home: DataHome, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["a", "b", "c"], "answer": ["1", None, "3"]}), path)
    dataset = import_dataset(database, home, path, ImportOptions(skip_invalid=True))
    assert (dataset.rows, dataset.invalid_rows) == (2, 1)


def test_text_file_by_paragraphs(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("\n\nFirst para\nstill first.\n\n\nSecond.\n\n", encoding="utf-8")
    dataset = import_dataset(database, home, path)
    records = read_jsonl(dataset_files(home, dataset).records)
    assert records == [{"text": "First para\nstill first."}, {"text": "Second."}]
    assert dataset.format == "text"


def test_text_file_by_lines(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\nthree\n", encoding="utf-8")
    dataset = import_dataset(database, home, path)
    assert [r["text"] for r in read_jsonl(dataset_files(home, dataset).records)] == [
        "one",
        "two",
        "three",
    ]


def test_json_file_holding_json_lines(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [{"text": "a"}, {"text": "b"}])
    dataset = import_dataset(database, home, path)
    assert (dataset.container, dataset.rows) == ("jsonl", 2)
    assert dataset.original_file == "original.json"


def test_json_array_on_one_line(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_bytes(orjson.dumps([{"text": "a"}, {"text": "b"}]))
    dataset = import_dataset(database, home, path)
    assert (dataset.container, dataset.rows) == ("json", 2)


def test_ndjson_extension(database: Database, home: DataHome, tmp_path: Path) -> None:
    dataset = import_dataset(database, home, write_jsonl(tmp_path / "x.ndjson", [{"text": "a"}]))
    assert dataset.container == "jsonl"
    assert dataset.original_file == "original.jsonl"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_unicode_with_bom(
    database: Database, home: DataHome, tmp_path: Path, encoding: str
) -> None:
    for suffix, content in [
        (".csv", "instruction,output\nGrüße,Ça va\n"),
        (".jsonl", '{"text": "Grüße"}\n{"text": "Ça va"}\n'),
        (".json", '[{"text": "Grüße"}]'),
    ]:
        path = tmp_path / f"data{suffix}"
        path.write_text(content, encoding=encoding)
        dataset = import_dataset(database, home, path, ImportOptions(name=f"{encoding}{suffix}"))
        text = dataset_files(home, dataset).records.read_text(encoding="utf-8")
        assert "Grüße" in text, (encoding, suffix)


def test_cp1252_fallback(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("instruction,output\nCafé,“quoted” – dash €\n".encode("cp1252"))
    dataset = import_dataset(database, home, path)
    record = read_jsonl(dataset_files(home, dataset).records)[0]
    assert record["messages"][0]["content"] == "Café"
    assert record["messages"][1]["content"] == "“quoted” – dash €"
    assert dataset.stats["encoding"] == "cp1252"


def test_cp1252_jsonl_fallback(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes('{"text": "naïve"}\n'.encode("cp1252"))
    dataset = import_dataset(database, home, path)
    assert read_jsonl(dataset_files(home, dataset).records) == [{"text": "naïve"}]


# --- options -------------------------------------------------------------------------------------


def test_format_override(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "completion": "c", "text": "t"}])
    assert import_dataset(database, home, path).format == "prompt_completion"
    dataset = import_dataset(database, home, path, ImportOptions(format="text"))
    assert read_jsonl(dataset_files(home, dataset).records) == [{"text": "t"}]


def test_names_default_collide_and_may_hold_slashes(
    database: Database, home: DataHome, real_data: Path
) -> None:
    path = real_data / "identity.json"
    names = [import_dataset(database, home, path).name for _ in range(3)]
    assert names == ["identity", "identity (2)", "identity (3)"]
    odd = import_dataset(database, home, path, ImportOptions(name="../../etc/passwd"))
    assert odd.name == "../../etc/passwd"
    assert sorted(leftovers(home)) == sorted(d.id for d in list_datasets(database))


def test_split_is_deterministic(database: Database, home: DataHome, real_data: Path) -> None:
    path = real_data / "alpaca_en_demo.json"
    options = ImportOptions(validation_fraction=0.2, split_seed=7)
    first = import_dataset(database, home, path, options)
    second = import_dataset(database, home, path, options)
    other = import_dataset(
        database, home, path, ImportOptions(validation_fraction=0.2, split_seed=8)
    )

    def indices(dataset: Any) -> list[int]:
        return json.loads(dataset_files(home, dataset).split.read_text())["validation_indices"]

    assert indices(first) == indices(second) != indices(other)
    assert indices(first) == sorted(indices(first))
    assert len(indices(first)) == 200 == first.validation_rows


def test_small_split_holds_out_one(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "two.jsonl", [{"text": "a"}, {"text": "b"}])
    dataset = import_dataset(database, home, path, ImportOptions(validation_fraction=0.01))
    assert dataset.validation_rows == 1
    none = import_dataset(database, home, path, ImportOptions(validation_fraction=0))
    assert none.validation_rows == 0


# --- progress and cancelling -------------------------------------------------------------------


def test_progress_reaches_the_end(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "many.jsonl", [{"text": f"r{i}"} for i in range(5000)])
    updates: list[ImportProgress] = []
    import_dataset(database, home, path, progress=updates.append)
    assert 1 <= len(updates) <= 20
    assert updates[-1] == ImportProgress(path.stat().st_size, path.stat().st_size, 5000)


def test_cancel_leaves_nothing(database: Database, home: DataHome, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "many.jsonl", [{"text": f"r{i}"} for i in range(5000)])
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(ImportCancelled):
        import_dataset(database, home, path, cancelled=cancelled)
    assert list_datasets(database) == []
    assert leftovers(home) == []


def test_unexpected_errors_leave_nothing(
    database: Database, home: DataHome, real_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.datasets import importer

    def explode(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "write_split", explode)
    with pytest.raises(KeyboardInterrupt):
        import_dataset(database, home, real_data / "identity.json")
    assert list_datasets(database) == []
    assert leftovers(home) == []


def test_failed_insert_leaves_nothing(
    database: Database, home: DataHome, real_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.datasets import importer

    def broken_name(*_args: object) -> str:
        raise RuntimeError("database went away")

    monkeypatch.setattr(importer, "free_name", broken_name)
    with pytest.raises(RuntimeError):
        import_dataset(database, home, real_data / "identity.json")
    assert list_datasets(database) == []
    assert leftovers(home) == []


# --- inspection --------------------------------------------------------------------------------


def test_inspect_real_file(real_data: Path) -> None:
    inspection = inspect_file(real_data / "v1_sft_demo.jsonl", sample_size=3)
    assert (inspection.container, inspection.format) == ("jsonl", "messages")
    assert inspection.columns == ["messages"]
    assert len(inspection.sample_original) == len(inspection.sample_normalised) == 3
    assert inspection.problem is None


def test_inspect_csv_suggests_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("Question,Answer\nq,a\n")
    inspection = inspect_file(path)
    assert inspection.format == "alpaca"
    assert inspection.suggested_mapping == {"instruction": "Question", "output": "Answer"}
    assert inspection.sample_normalised[0]["messages"][0]["content"] == "q"


def test_inspect_reports_problems_instead_of_raising(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("a,b\n1,2\n")
    inspection = inspect_file(path)
    assert inspection.format is None
    assert inspection.problem is not None and "odd.csv" in inspection.problem
    assert inspection.sample_original == [{"a": "1", "b": "2"}]
    mapped = inspect_file(
        path, ImportOptions(format="alpaca", mapping={"instruction": "a", "output": "b"})
    )
    assert mapped.problem is None and mapped.sample_normalised


def test_inspect_reports_a_bad_record(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "x.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}]
    )
    inspection = inspect_file(path)
    assert inspection.problem is not None
    assert "record 2" in inspection.problem and "missing 'output'" in inspection.problem
