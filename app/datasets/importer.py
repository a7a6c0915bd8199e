"""Import a dataset file: copy it, normalise every record, gather statistics, record it.

Everything is written into a staging folder first; only when all of it succeeded is the folder
moved to `datasets/<id>/` and the row inserted, so a failed, cancelled or interrupted import
leaves neither files nor a row behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.formats import (
    DETECTION_SAMPLE,
    FIELDS,
    FORMATS,
    Normaliser,
    Record,
    RecordError,
    detect_format,
    make_normaliser,
    suggest_mapping,
)
from app.datasets.readers import (
    TABULAR,
    EncodingCheck,
    FileInfo,
    Item,
    RawRecord,
    ReadPosition,
    UnreadableRecord,
    array_record_line,
    read_records,
    resolve_encoding,
    sniff_file,
)
from app.datasets.splits import check_fraction, split_document, write_split
from app.datasets.stats import StatsCollector
from app.db.models import Dataset
from app.db.session import Database
from app.errors import BadInputError
from app.paths import DataHome

STAGING_PREFIX = ".staging-"
OWNER_FILE = "owner.pid"
RECORDS_FILE = "records.jsonl"
SOURCE_FILE = "source.jsonl"
SPLIT_FILE = "split.json"
MAX_NAME_LENGTH = 200
_PROGRESS_INTERVAL_S = 0.1
_CHUNK_RECORDS = 1024
_COPY_CHUNK_BYTES = 1 << 20
_WRITE_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class ImportOptions:
    """How to import a file; the defaults detect everything."""

    name: str | None = None  # display name; default: file stem
    format: str | None = None  # override detection
    mapping: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    skip_invalid: bool = False
    size_limit_bytes: int | None = None
    validation_fraction: float = 0.1
    split_seed: int = 42


@dataclass(frozen=True)
class ImportProgress:
    bytes_read: int
    total_bytes: int
    records: int  # records read so far


class ImportCancelled(Exception):  # noqa: N818  # the name callers know; it is no error
    """The import was cancelled by its caller; nothing was kept."""


@dataclass(frozen=True)
class Inspection:
    """A first look at a file, for the import dialog."""

    container: str
    format: str | None
    columns: list[str]
    suggested_mapping: dict[str, str]
    sample_original: list[dict[str, Any]]
    sample_normalised: list[dict[str, Any]]
    problem: str | None  # one sentence when the file will not import as it is


@dataclass(frozen=True)
class _Choice:
    """The format a file will be read as, and from which columns."""

    format: str
    mapping: dict[str, str]
    columns: list[str]


# --- public entry points ----------------------------------------------------------------------


def import_dataset(  # noqa: PLR0917  # the signature callers were promised
    database: Database,
    home: DataHome,
    path: Path,
    options: ImportOptions = ImportOptions(),  # frozen, so sharing it is safe
    progress: Callable[[ImportProgress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Dataset:
    """Import the file at `path` and return its new Dataset row.

    Raises BadInputError (nothing kept) when the file cannot be used, ImportCancelled when
    `cancelled()` turned true.
    """
    _check_options(options)
    info = sniff_file(path, options.size_limit_bytes)
    staging = _new_staging(home)
    try:
        monitor = _Monitor(progress, cancelled, info.size_bytes)
        built = _build(staging, info, options, monitor)
        return _commit(database, home, staging, built, _base_name(path, options))
    finally:
        # Reached with the folder still here only when something failed: nothing half-done stays.
        shutil.rmtree(staging, ignore_errors=True)


def inspect_file(
    path: Path,
    options: ImportOptions = ImportOptions(),  # frozen, so sharing it is safe
    sample_size: int = 5,
) -> Inspection:
    """Look at the head of `path`: its container, format, columns and a few records."""
    info = sniff_file(path, options.size_limit_bytes)
    sample = _head(info)
    records = [item for item in sample if type(item) is RawRecord]
    columns = _columns_of(records)
    try:
        _check_options(options)
        choice = _choose_format(records, sample, columns, info, options)
    except BadInputError as error:
        return _inspection(info, columns, records[:sample_size], problem=error.message)
    normalised, problem = _normalise_sample(records[:sample_size], choice, info)
    unreadable = next((i for i in sample[:sample_size] if type(i) is UnreadableRecord), None)
    if problem is None and unreadable is not None:
        problem = _problem_sentence(info, unreadable.index, unreadable.line, unreadable.reason)
    inspection = _inspection(info, columns, records[:sample_size], problem, choice)
    return replace(inspection, sample_normalised=normalised)


# --- building the staging folder --------------------------------------------------------------


@dataclass
class _Built:
    info: FileInfo
    choice: _Choice
    sha256: str
    rows: int
    invalid_rows: int
    validation_rows: int
    stats: dict[str, Any]
    options: ImportOptions


def _build(staging: Path, info: FileInfo, options: ImportOptions, monitor: _Monitor) -> _Built:
    original = staging / f"original.{info.extension}"
    sha256, check = _copy_original(info, original, monitor)
    info = replace(info, path=original)
    if info.container != "parquet":
        info = resolve_encoding(info, check)
    position = ReadPosition()
    with closing(read_records(info, position)) as items:
        sample = list(islice(items, DETECTION_SAMPLE))
        records = [item for item in sample if type(item) is RawRecord]
        choice = _choose_format(records, sample, _columns_of(records), info, options)
        conversion = _Conversion(staging, choice, monitor, position)
        conversion.run(chain(sample, items))
    rows, invalid = conversion.check_outcome(info, options)
    choice = replace(choice, columns=list(conversion.columns))
    split = split_document(rows, options.validation_fraction, options.split_seed)
    write_split(staging / SPLIT_FILE, split)
    stats = conversion.stats.summary()
    validation_rows = len(split["validation_indices"])
    return _Built(info, choice, sha256, rows, invalid, validation_rows, stats, options)


def _copy_original(info: FileInfo, target: Path, monitor: _Monitor) -> tuple[str, EncodingCheck]:
    """Copy the file byte for byte, hashing it and checking its text encoding on the way."""
    digest = hashlib.sha256()
    check = EncodingCheck("utf-8" if info.container == "parquet" else info.encoding)
    text = info.container != "parquet"
    copied = 0
    with info.path.open("rb") as source, target.open("wb") as copy:
        while chunk := source.read(_COPY_CHUNK_BYTES):
            digest.update(chunk)
            copy.write(chunk)
            if text:
                check.feed(chunk)
            copied += len(chunk)
            monitor.check_cancelled()
    if text:
        check.feed(b"", final=True)
    return digest.hexdigest(), check


class _Conversion:
    """Normalises every record into records.jsonl and source.jsonl, counting as it goes."""

    def __init__(self, staging: Path, choice: _Choice, monitor: _Monitor, position: ReadPosition):
        self.staging, self.choice, self.monitor, self.position = staging, choice, monitor, position
        self.stats = StatsCollector()
        self.normaliser: Normaliser = make_normaliser(choice.format, choice.mapping)
        self.rows = 0
        self.failures = _Failures(choice.format)
        self.columns: dict[str, None] = dict.fromkeys(choice.columns)

    def run(self, items: Iterable[Item]) -> None:
        records_path, source_path = self.staging / RECORDS_FILE, self.staging / SOURCE_FILE
        with _writer(records_path) as records_out, _writer(source_path) as source_out:
            for chunk in _chunks(items):
                self._convert(chunk, records_out, source_out)
                self.monitor.tick(self.position.bytes_read, self.rows + self.failures.count)
        self.monitor.finish(self.rows + self.failures.count)

    def _convert(self, chunk: list[Item], records_out: IO[bytes], source_out: IO[bytes]) -> None:
        # The hot loop: locals instead of attribute look-ups, one write per chunk per file.
        normaliser, add_stats, columns = self.normaliser, self.stats.add, self.columns
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        canonical_lines: list[bytes] = []
        source_lines: list[bytes] = []
        for item in chunk:
            if type(item) is UnreadableRecord:
                self.failures.add(item.index, item.line, item.reason, readable=False)
                continue
            data = item.data  # type: ignore[union-attr]
            try:
                record = normaliser(data)
            except RecordError as error:
                self.failures.add(item.index, item.line, error.reason, readable=True)
                continue
            encoded = dumps(record, default=str, option=newline)
            add_stats(record, encoded)
            canonical_lines.append(encoded)
            source_lines.append(_source_line(item.raw, data))  # type: ignore[union-attr]
            for key in data:
                if key not in columns:
                    columns[key] = None
        self.rows += len(canonical_lines)
        records_out.write(b"".join(canonical_lines))
        source_out.write(b"".join(source_lines))

    def check_outcome(self, info: FileInfo, options: ImportOptions) -> tuple[int, int]:
        """(rows kept, rows skipped); BadInputError when the file does not import as it is."""
        failures, total = self.failures, self.rows + self.failures.count
        if total == 0:
            raise BadInputError(f"{info.name} holds no records; choose a file that holds data.")
        if failures.count and (not options.skip_invalid or self.rows == 0):
            raise failures.error(info, total, skipping=options.skip_invalid)
        return self.rows, failures.count


def _source_line(raw: bytes | None, data: dict[str, Any]) -> bytes:
    if raw is None:
        return orjson.dumps(data, default=str, option=orjson.OPT_APPEND_NEWLINE)
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _chunks(items: Iterable[Item]) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _CHUNK_RECORDS)):
        yield chunk


def _writer(path: Path) -> IO[bytes]:
    return path.open("wb", buffering=_WRITE_BUFFER_BYTES)


class _Failures:
    """Records that did not import: how many, and the first, for the message."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.count = 0
        self.unreadable = 0
        self.first: tuple[int, int | None, str] | None = None

    def add(self, index: int, line: int | None, reason: str, readable: bool) -> None:
        self.count += 1
        self.unreadable += not readable
        if self.first is None:
            self.first = (index, line, reason)

    def error(self, info: FileInfo, total: int, skipping: bool) -> BadInputError:
        assert self.first is not None
        index, line, reason = self.first
        where = _where(info, index, line)
        if skipping:
            return BadInputError(
                f"{info.name}: none of its {total} records could be imported (the first, {where}, "
                f"failed with: {reason}); check the format and the column mapping."
            )
        of = f"{self.count} of {total} records" if total > 1 else "its only record"
        verb = self._verb(plural=self.count > 1)
        return BadInputError(
            f"{info.name}: {of} {verb} (the first is {where}: {reason}); "
            "fix them or import with --skip-invalid to skip them."
        )

    def _verb(self, plural: bool) -> str:
        if self.unreadable == self.count:
            return "cannot be read"
        if self.unreadable == 0:
            return f"do{'' if plural else 'es'} not match the {self.format} format"
        return "are invalid" if plural else "is invalid"


def _where(info: FileInfo, index: int, line: int | None) -> str:
    if line is None and info.container == "json":
        line = array_record_line(info, index)
    return f"record {index + 1}" + (f" on line {line}" if line is not None else "")


def _problem_sentence(info: FileInfo, index: int, line: int | None, reason: str) -> str:
    return f"{info.name}: {_where(info, index, line)} cannot be used ({reason})."


# --- choosing the format ----------------------------------------------------------------------


def _head(info: FileInfo) -> list[Item]:
    try:
        with closing(read_records(info)) as items:
            return list(islice(items, DETECTION_SAMPLE))
    except UnicodeDecodeError as error:
        raise BadInputError(
            f"{info.name} is not {info.encoding.upper()} text (byte offset {error.start} of a "
            "block cannot be decoded); save the file as UTF-8 and import it again."
        ) from None


def _columns_of(records: list[RawRecord]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record.data))
    return list(columns)


def _choose_format(
    records: list[RawRecord],
    sample: list[Item],
    columns: list[str],
    info: FileInfo,
    options: ImportOptions,
) -> _Choice:
    """The format and mapping to read the file with: the options', else detected."""
    if not records:
        raise _no_records_error(info, sample)
    fmt, mapping = options.format, dict(options.mapping)
    if fmt is None:
        fmt, mapping = _detect(records, columns, mapping, info)
    elif not mapping:
        suggested, suggestion = suggest_mapping(columns)
        if suggested == fmt and detect_format([r.data for r in records]) != fmt:
            mapping = suggestion
    _check_mapping(fmt, mapping, columns, info)
    return _Choice(fmt, _full_mapping(fmt, mapping, columns), columns)


def _detect(
    records: list[RawRecord], columns: list[str], mapping: dict[str, str], info: FileInfo
) -> tuple[str, dict[str, str]]:
    renamed = [_renamed(record.data, mapping) for record in records]
    fmt = detect_format(renamed)
    if fmt is None and not mapping:
        fmt, mapping = suggest_mapping(columns)
    if fmt is None:
        what = "columns" if info.container in TABULAR else "keys"
        raise BadInputError(
            f"{info.name} has no recognisable format (its {what} are {_listed(columns)}); "
            "choose one with --format and map its fields with --map FIELD=COLUMN."
        )
    return fmt, mapping


def _renamed(data: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {**data, **{field: data[column] for field, column in mapping.items() if column in data}}


def _check_mapping(fmt: str, mapping: dict[str, str], columns: list[str], info: FileInfo) -> None:
    for field_name, column in mapping.items():
        if field_name not in FIELDS[fmt]:
            raise BadInputError(
                f"'{field_name}' is not a field of the {fmt} format; "
                f"map one of {_listed(list(FIELDS[fmt]))}."
            )
        if column not in columns:
            what = "column" if info.container in TABULAR else "key"
            raise BadInputError(
                f"{info.name} has no {what} '{column}' (mapped to {field_name}); "
                f"its {what}s are {_listed(columns)}."
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
        f"{_where(info, first.index, first.line)}: {first.reason}); check that the file is "
        "what its name says and export it again."
    )


def _listed(names: list[str], limit: int = 12) -> str:
    if not names:
        return "none"
    shown = ", ".join(f"'{name}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _normalise_sample(
    records: list[RawRecord], choice: _Choice, info: FileInfo
) -> tuple[list[Record], str | None]:
    normaliser = make_normaliser(choice.format, choice.mapping)
    normalised: list[Record] = []
    problem = None
    for record in records:
        try:
            normalised.append(normaliser(record.data))
        except RecordError as error:
            problem = problem or _problem_sentence(info, record.index, record.line, error.reason)
    return normalised, problem


def _inspection(
    info: FileInfo,
    columns: list[str],
    records: list[RawRecord],
    problem: str | None,
    choice: _Choice | None = None,
) -> Inspection:
    return Inspection(
        container=info.container,
        format=choice.format if choice else None,
        columns=columns,
        suggested_mapping=dict(choice.mapping) if choice else {},
        sample_original=[record.data for record in records],
        sample_normalised=[],
        problem=problem,
    )


# --- options, names, committing ----------------------------------------------------------------


def _check_options(options: ImportOptions) -> None:
    if options.format is not None and options.format not in FORMATS:
        raise BadInputError(
            f"'{options.format}' is not a known format; use one of {', '.join(FORMATS)}."
        )
    check_fraction(options.validation_fraction)
    if options.name is not None:
        check_name(options.name)


def check_name(name: str) -> str:
    """The name, stripped; BadInputError when it is empty or too long."""
    stripped = name.strip()
    if not stripped:
        raise BadInputError("the dataset name is empty; enter a name.")
    if len(stripped) > MAX_NAME_LENGTH:
        raise BadInputError(
            f"the dataset name is {len(stripped)} characters long; use at most {MAX_NAME_LENGTH}."
        )
    return stripped


def _base_name(path: Path, options: ImportOptions) -> str:
    if options.name is not None:
        return check_name(options.name)
    # Leave room for a " (12)" suffix within the column's 200 characters.
    return path.stem.strip()[: MAX_NAME_LENGTH - 10] or "dataset"


def free_name(session: Session, base: str) -> str:
    """`base`, or `base (2)`, `base (3)`... whichever is not taken yet."""
    query = select(Dataset.name).where(Dataset.name.startswith(base, autoescape=True))
    taken = set(session.scalars(query))
    if base not in taken:
        return base
    number = 2
    while f"{base} ({number})" in taken:
        number += 1
    return f"{base} ({number})"


def _new_staging(home: DataHome) -> Path:
    home.datasets.mkdir(parents=True, exist_ok=True)
    staging = home.datasets / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    staging.mkdir(mode=0o700)
    # Marks the folder as in use, so that another process's start-up clean-up leaves it alone.
    (staging / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
    return staging


def _commit(database: Database, home: DataHome, staging: Path, built: _Built, base: str) -> Dataset:
    """Move the staging folder into place and insert the row, as one step."""
    (staging / OWNER_FILE).unlink()
    for _attempt in range(20):
        dataset_id = secrets.token_hex(6)
        target = home.dataset_dir(dataset_id)
        if target.exists():
            continue
        try:
            dataset = _row(built, dataset_id, base)
            return _insert(database, staging, target, dataset)
        except IntegrityError:
            continue  # another import took the name (or id) a moment ago: choose again
    raise BadInputError("the dataset could not be given a free name; try another name.")


def _insert(database: Database, staging: Path, target: Path, dataset: Dataset) -> Dataset:
    moved = False
    try:
        with database.session() as session:
            dataset.name = free_name(session, dataset.name)
            session.add(dataset)
            session.flush()
            staging.rename(target)
            moved = True
    except IntegrityError:
        if moved:
            target.rename(staging)
        raise
    except BaseException:
        if moved:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return dataset


def _row(built: _Built, dataset_id: str, name: str) -> Dataset:
    info, options = built.info, built.options
    source_name = Path(info.name).name[:255]
    stats = {
        "rows": built.rows,
        "invalid_rows": built.invalid_rows,
        "validation_rows": built.validation_rows,
        "format": built.choice.format,
        "container": info.container,
        "encoding": info.encoding,
        "source_name": source_name,
        "size_bytes": info.size_bytes,
        "sha256": built.sha256,
        "columns": built.choice.columns,
        "column_mapping": built.choice.mapping,
        **built.stats,
    }
    return Dataset(
        id=dataset_id,
        name=name,
        format=built.choice.format,
        container=info.container,
        source_name=source_name,
        original_file=info.path.name,
        size_bytes=info.size_bytes,
        sha256=built.sha256,
        rows=built.rows,
        invalid_rows=built.invalid_rows,
        empty_rows=built.stats["empty_rows"],
        duplicate_rows=built.stats["duplicate_rows"],
        columns=built.choice.columns,
        column_mapping=built.choice.mapping,
        stats=stats,
        split_seed=options.split_seed,
        validation_fraction=options.validation_fraction,
        validation_rows=built.validation_rows,
    )


# --- progress and cancelling ------------------------------------------------------------------


class _Monitor:
    """Calls back with progress a few times a second at most, and raises when cancelled."""

    def __init__(
        self,
        progress: Callable[[ImportProgress], None] | None,
        cancelled: Callable[[], bool] | None,
        total_bytes: int,
    ) -> None:
        self.progress, self.cancelled, self.total_bytes = progress, cancelled, total_bytes
        self._last = 0.0

    def check_cancelled(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise ImportCancelled("the import was cancelled")

    def tick(self, bytes_read: int, records: int) -> None:
        self.check_cancelled()
        now = time.monotonic()
        if self.progress is not None and now - self._last >= _PROGRESS_INTERVAL_S:
            self._last = now
            self.progress(
                ImportProgress(min(bytes_read, self.total_bytes), self.total_bytes, records)
            )

    def finish(self, records: int) -> None:
        if self.progress is not None:
            self.progress(ImportProgress(self.total_bytes, self.total_bytes, records))
