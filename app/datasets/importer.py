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
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.choosing import Choice, choose_format, columns_of, problem_sentence, record_place
from app.datasets.formats import (
    DETECTION_SAMPLE,
    FORMATS,
    Normaliser,
    Record,
    RecordError,
    make_normaliser,
    quoted,
)
from app.datasets.readers import (
    FileInfo,
    Item,
    RawRecord,
    ReadPosition,
    UnreadableRecord,
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


class ImportCancelled(Exception):  # the name callers know; it is no error
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
    info, sample = _head(info)
    records = [item for item in sample if type(item) is RawRecord]
    columns = columns_of(records)
    try:
        _check_options(options)
        choice = choose_format(sample, info, fmt=options.format, mapping=options.mapping)
    except BadInputError as error:
        return _inspection(info, columns, records[:sample_size], problem=error.message)
    normalised, problem = _normalise_sample(records[:sample_size], choice, info)
    unreadable = next((i for i in sample[:sample_size] if type(i) is UnreadableRecord), None)
    if problem is None and unreadable is not None:
        problem = problem_sentence(info, unreadable.index, unreadable.line, unreadable.reason)
    inspection = _inspection(info, columns, records[:sample_size], problem, choice)
    return replace(inspection, sample_normalised=normalised)


# --- building the staging folder --------------------------------------------------------------


@dataclass
class _Built:
    info: FileInfo
    choice: Choice
    sha256: str
    rows: int
    invalid_rows: int
    validation_rows: int
    stats: dict[str, Any]
    options: ImportOptions


def _build(staging: Path, info: FileInfo, options: ImportOptions, monitor: _Monitor) -> _Built:
    original = staging / f"original.{info.extension}"
    with _OriginalCopy(info.path, original) as copy:
        try:
            choice, conversion = _convert(staging, info, options, monitor)
        except UnicodeDecodeError:
            # Not the codec the head suggested: check the whole file, then read it once more.
            info = resolve_encoding(info)
            choice, conversion = _convert(staging, info, options, monitor)
        sha256 = copy.result()
    conversion.sources.link(original)
    rows, invalid = conversion.check_outcome(info, options)
    choice = replace(choice, columns=list(conversion.columns))
    split = split_document(rows, options.validation_fraction, options.split_seed)
    write_split(staging / SPLIT_FILE, split)
    stats = conversion.stats.summary()
    validation_rows = len(split["validation_indices"])
    return _Built(info, choice, sha256, rows, invalid, validation_rows, stats, options)


def _convert(
    staging: Path, info: FileInfo, options: ImportOptions, monitor: _Monitor
) -> tuple[Choice, _Conversion]:
    position = ReadPosition()
    with closing(read_records(info, position)) as items:
        sample = list(islice(items, DETECTION_SAMPLE))
        choice = choose_format(sample, info, fmt=options.format, mapping=options.mapping)
        conversion = _Conversion(staging, info, choice, monitor)
        conversion.position = position
        conversion.run(chain(sample, items))
    return choice, conversion


class _OriginalCopy:
    """Copies the original byte for byte and hashes the copy, on a thread beside the conversion.

    The copy is made by the kernel (copy_file_range where there is one) and hashing releases
    the GIL, so this costs the conversion almost nothing.
    """

    def __init__(self, source: Path, target: Path) -> None:
        self.source, self.target = source, target
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-copy")
        self._future: Future[str] | None = None

    def __enter__(self) -> _OriginalCopy:
        self._future = self._executor.submit(self._copy)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._executor.shutdown(wait=True)

    def result(self) -> str:
        assert self._future is not None
        return self._future.result()

    def _copy(self) -> str:
        shutil.copyfile(self.source, self.target)
        with self.target.open("rb") as copy:
            return hashlib.file_digest(copy, "sha256").hexdigest()


class _Conversion:
    """Normalises every record into records.jsonl and source.jsonl, counting as it goes."""

    def __init__(self, staging: Path, info: FileInfo, choice: Choice, monitor: _Monitor) -> None:
        self.staging, self.info, self.choice, self.monitor = staging, info, choice, monitor
        self.position = ReadPosition()
        self.stats = StatsCollector()
        self.normaliser: Normaliser = make_normaliser(choice.format, choice.mapping)
        self.rows = 0
        self.failures = _Failures(choice.format)
        self.columns: dict[str, None] = dict.fromkeys(choice.columns)
        self.sources = _SourceWriter(staging / SOURCE_FILE, info)

    def run(self, items: Iterable[Item]) -> None:
        iterator = iter(items)
        with _writer(self.staging / RECORDS_FILE) as records_out, self.sources:
            while self._convert(islice(iterator, _CHUNK_RECORDS), records_out):
                self.monitor.tick(self.position.bytes_read, self.rows + self.failures.count)
        self.monitor.finish(self.rows + self.failures.count)

    def _convert(self, chunk: Iterable[Item], records_out: IO[bytes]) -> int:
        """Convert one chunk of records; returns how many items it held (0 at the end).

        The hot loop: locals instead of attribute look-ups, one write per chunk per file, and
        nothing kept from one record to the next but bytes (which the GC does not walk).
        """
        normaliser, add_stats, columns = self.normaliser, self.stats.add, self.columns
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        canonical_lines: list[bytes] = []
        source_lines: list[bytes] = []
        seen = 0
        for item in chunk:
            seen += 1
            if type(item) is UnreadableRecord:
                self.failures.add(item.index, item.line, item.reason, readable=False)
                continue
            data = item.data  # type: ignore[union-attr]
            try:
                record = normaliser(data)
            except RecordError as error:
                self.failures.add(item.index, item.line, error.reason, readable=True)
                continue
            add_stats(record)
            canonical_lines.append(dumps(record, default=str, option=newline))
            raw = item.raw  # type: ignore[union-attr]
            source_lines.append(dumps(data, default=str, option=newline) if raw is None else raw)
            for key in data:
                if key not in columns:
                    columns[key] = None
        self.rows += len(canonical_lines)
        self.stats.add_encoded(canonical_lines)
        records_out.write(b"".join(canonical_lines))
        self.sources.write(source_lines, self.position.bytes_read)
        return seen

    def check_outcome(self, info: FileInfo, options: ImportOptions) -> tuple[int, int]:
        """(rows kept, rows skipped); BadInputError when the file does not import as it is."""
        failures, total = self.failures, self.rows + self.failures.count
        if total == 0:
            raise BadInputError(f"{info.name} holds no records; choose a file that holds data.")
        if failures.count and (not options.skip_invalid or self.rows == 0):
            raise failures.error(info, total, skipping=options.skip_invalid)
        return self.rows, failures.count


class _SourceWriter:
    """Writes source.jsonl: each kept record as the file had it, in records.jsonl's order.

    When every line of a UTF-8 JSON Lines file is kept as it is, source.jsonl would repeat the
    original byte for byte, so nothing is written and `link` makes it a hard link to the stored
    original. The first chunk that breaks the match (a skipped record, a blank line, a BOM) has
    the matching prefix copied from the file, and writing goes on normally from there.
    """

    def __init__(self, path: Path, info: FileInfo) -> None:
        self.path, self.info = path, info
        self.verbatim = info.container == "jsonl" and info.encoding in ("utf-8", "utf-8-sig")
        self.matched = 0  # bytes of the original that source.jsonl repeats so far
        self._file: IO[bytes] | None = None

    def __enter__(self) -> _SourceWriter:
        if not self.verbatim:
            self._file = _writer(self.path)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, lines: list[bytes], bytes_read: int) -> None:
        """Write one chunk's lines; `bytes_read` is where the reader stands after the chunk."""
        if self.verbatim:
            chunk_bytes = sum(map(len, lines))
            if self.matched + chunk_bytes == bytes_read:
                self.matched = bytes_read
                return
            self._stop_matching()
        assert self._file is not None
        data = b"".join(lines)
        # Only the file's last line can lack its newline; source.jsonl's lines all end in one.
        self._file.write(data if data.endswith(b"\n") or not data else data + b"\n")

    def _stop_matching(self) -> None:
        self.verbatim = False
        self._file = _writer(self.path)
        with self.info.path.open("rb") as original:
            _copy_bytes(original, self._file, self.matched)

    def link(self, original: Path) -> None:
        """Finish: make source.jsonl the original itself when every byte of it matched."""
        if not self.verbatim:
            return
        if self.matched != self.info.size_bytes:
            with original.open("rb") as source, _writer(self.path) as target:
                _copy_bytes(source, target, self.matched)
            return
        try:
            os.link(original, self.path)
        except OSError:  # a file system without hard links
            shutil.copyfile(original, self.path)


def _copy_bytes(source: IO[bytes], target: IO[bytes], count: int) -> None:
    while count > 0 and (chunk := source.read(min(count, _COPY_CHUNK_BYTES))):
        target.write(chunk)
        count -= len(chunk)


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
        where = record_place(info, index, line)
        if skipping:
            return BadInputError(
                f"{info.name}: none of its {total} records could be imported (the first, {where}, "
                f"failed with: {reason}); check the format and the column mapping."
            )
        if total == 1:
            return BadInputError(
                f"{info.name}: its only record {self._verb(plural=False)} ({where}: {reason}); "
                "fix it and import the file again."
            )
        verb = self._verb(plural=self.count > 1)
        them = "them" if self.count > 1 else "it"
        return BadInputError(
            f"{info.name}: {self.count} of {total} records {verb} (the first is {where}: "
            f"{reason}); fix {them} or import with --skip-invalid to skip {them}."
        )

    def _verb(self, plural: bool) -> str:
        if self.unreadable == self.count:
            return "cannot be read"
        if self.unreadable == 0:
            return f"do{'' if plural else 'es'} not match the {self.format} format"
        return "are invalid" if plural else "is invalid"


# --- choosing the format ----------------------------------------------------------------------


def _head(info: FileInfo) -> tuple[FileInfo, list[Item]]:
    try:
        return info, _first_items(info)
    except UnicodeDecodeError:
        info = resolve_encoding(info)
        return info, _first_items(info)


def _first_items(info: FileInfo) -> list[Item]:
    with closing(read_records(info)) as items:
        return list(islice(items, DETECTION_SAMPLE))


def _normalise_sample(
    records: list[RawRecord], choice: Choice, info: FileInfo
) -> tuple[list[Record], str | None]:
    normaliser = make_normaliser(choice.format, choice.mapping)
    normalised: list[Record] = []
    problem = None
    for record in records:
        try:
            normalised.append(normaliser(record.data))
        except RecordError as error:
            problem = problem or problem_sentence(info, record.index, record.line, error.reason)
    return normalised, problem


def _inspection(
    info: FileInfo,
    columns: list[str],
    records: list[RawRecord],
    problem: str | None,
    choice: Choice | None = None,
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
            f"{quoted(options.format)} is not a known format; use one of {', '.join(FORMATS)}."
        )
    check_fraction(options.validation_fraction)
    if options.name is not None:
        check_name(options.name)


def check_name(name: str) -> str:
    """The name, stripped; BadInputError when it is empty or too long."""
    stripped = name.strip()
    if not stripped:
        raise BadInputError("The dataset name is empty; enter a name.")
    if len(stripped) > MAX_NAME_LENGTH:
        raise BadInputError(
            f"The dataset name is {len(stripped)} characters long; use at most {MAX_NAME_LENGTH}."
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
    raise BadInputError("The dataset could not be given a free name; try another name.")


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
        original_file=f"original.{info.extension}",
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
