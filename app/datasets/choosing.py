"""Choosing how to read a file: its format and column mapping, from options or detection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.datasets.formats import (
    FIELDS,
    closest_format,
    detect_format,
    quoted,
    suggest_mapping,
)
from app.datasets.readers import (
    TABULAR,
    FileInfo,
    Item,
    RawRecord,
    UnreadableRecord,
    array_record_line,
)
from app.errors import BadInputError


@dataclass(frozen=True)
class Choice:
    """The format a file will be read as, and from which columns."""

    format: str
    mapping: dict[str, str]
    columns: list[str]


def record_place(info: FileInfo, index: int, line: int | None) -> str:
    if line is None and info.container == "json":
        line = array_record_line(info, index)
    return f"record {index + 1}" + (f" on line {line}" if line is not None else "")


def problem_sentence(info: FileInfo, index: int, line: int | None, reason: str) -> str:
    return f"{info.name}: {record_place(info, index, line)} cannot be used ({reason})."


def columns_of(records: list[RawRecord]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record.data))
    return list(columns)


def choose_format(
    sample: list[Item], info: FileInfo, *, fmt: str | None, mapping: dict[str, str]
) -> Choice:
    """The format and mapping to read the file with: those given, else detected from `sample`."""
    records = [item for item in sample if type(item) is RawRecord]
    columns = columns_of(records)
    if not records:
        raise _no_records_error(info, sample)
    mapping = dict(mapping)
    if fmt is None:
        fmt, mapping = _detect(records, columns, mapping, info)
    elif not mapping:
        suggested, suggestion = suggest_mapping(columns)
        if suggested == fmt and detect_format([r.data for r in records]) != fmt:
            mapping = suggestion
    _check_mapping(fmt, mapping, columns, info)
    return Choice(fmt, _full_mapping(fmt, mapping, columns), columns)


def _detect(
    records: list[RawRecord], columns: list[str], mapping: dict[str, str], info: FileInfo
) -> tuple[str, dict[str, str]]:
    renamed = [_renamed(record.data, mapping) for record in records]
    fmt = detect_format(renamed)
    if fmt is None and not mapping:
        fmt, mapping = suggest_mapping(columns)
    if fmt is None:
        # Close to a format but not quite (an "instruction" without "output"): let the records
        # say what they lack.
        fmt = closest_format(list(_renamed(dict.fromkeys(columns), mapping)))
    if fmt is None:
        what = "columns" if info.container in TABULAR else "keys"
        raise BadInputError(
            f"{info.name} has no recognisable format (its {what} are {listed(columns)}); "
            "choose one with --format and map its fields with --map FIELD=COLUMN."
        )
    return fmt, mapping


def _renamed(data: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {**data, **{field: data[column] for field, column in mapping.items() if column in data}}


def _check_mapping(fmt: str, mapping: dict[str, str], columns: list[str], info: FileInfo) -> None:
    for field_name, column in mapping.items():
        if field_name not in FIELDS[fmt]:
            raise BadInputError(
                f"{quoted(field_name)} is not a field of the {fmt} format; "
                f"map one of {listed(list(FIELDS[fmt]))}."
            )
        if column not in columns:
            what = "column" if info.container in TABULAR else "key"
            raise BadInputError(
                f"{info.name} has no {what} {quoted(column)} (mapped to {field_name}); "
                f"its {what}s are {listed(columns)}."
            )


def _full_mapping(fmt: str, mapping: dict[str, str], columns: list[str]) -> dict[str, str]:
    """Every field of `fmt` that a column provides, named explicitly (shown and stored)."""
    full = {}
    for field_name in FIELDS[fmt]:
        column = mapping.get(field_name, field_name)
        if column in columns:
            full[field_name] = column
    if fmt == "prompt_completion" and "completion" not in full and "response" in columns:
        full["completion"] = "response"
    return full


def _no_records_error(info: FileInfo, sample: list[Item]) -> BadInputError:
    first = next((item for item in sample if type(item) is UnreadableRecord), None)
    if first is None:
        return BadInputError(f"{info.name} holds no records; choose a file that holds data.")
    return BadInputError(
        f"{info.name}: none of its first {len(sample)} records can be read (the first is "
        f"{record_place(info, first.index, first.line)}: {first.reason}); check that the file is "
        "what its name says and export it again."
    )


def listed(names: list[str], limit: int = 12) -> str:
    if not names:
        return "none"
    shown = ", ".join(quoted(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
