"""Streaming readers, one per container: JSON, JSON Lines, CSV, TSV, Parquet and plain text.

Each reader yields `RawRecord`s one at a time (a JSON array is parsed whole, the others stream),
and an `UnreadableRecord` for a record that cannot be read at all (a JSON Lines line that is not
JSON, a CSV row with the wrong number of cells), so that the importer can count or skip it.

Plain text: when the file has blank lines, each block of lines between blank lines is a record
(paragraphs, documents); when it has none, each non-empty line is a record.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import orjson

from app.datasets.formats import display
from app.errors import BadInputError

# Extension -> container. The original is stored as `original.<ext>` with ext from this table's
# values, never from the user's file name.
CONTAINERS: dict[str, str] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
}
CONTAINER_NAMES = {
    "json": "JSON",
    "jsonl": "JSON Lines",
    "csv": "CSV",
    "tsv": "TSV",
    "parquet": "Parquet",
    "txt": "text",
}
# The extension the stored original gets: the canonical spelling of the user's extension.
CONTAINER_EXTENSIONS = {
    suffix: {".ndjson": "jsonl", ".tab": "tsv", ".pq": "parquet", ".text": "txt"}.get(
        suffix, suffix.lstrip(".")
    )
    for suffix in CONTAINERS
}
TABULAR = frozenset({"csv", "tsv", "parquet"})
HEAD_BYTES = 64 * 1024
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_PARQUET_BATCH_ROWS = 4096
_FIRST_LINE_LIMIT = 64 * 1024 * 1024


@dataclass(slots=True)
class RawRecord:
    """One record as read: its 0-based index, its 1-based line (None where lines mean nothing)."""

    index: int
    line: int | None
    data: dict[str, Any]
    raw: bytes | None = None  # the record's own bytes, where the file has them (JSON Lines)


@dataclass(slots=True)
class UnreadableRecord:
    """A record that could not be read; `reason` is a short clause."""

    index: int
    line: int | None
    reason: str


Item = RawRecord | UnreadableRecord


@dataclass
class ReadPosition:
    """How far a reader has got, for progress (approximate where reading is buffered)."""

    bytes_read: int = 0


@dataclass(frozen=True)
class FileInfo:
    """What the first bytes of a file say about how to read it."""

    path: Path
    name: str  # the file's own name, for messages (the path may be the stored copy)
    container: str
    extension: str  # from CONTAINERS' keys, without the dot: the stored original's extension
    encoding: str  # a Python codec name; "utf-8" for Parquet
    size_bytes: int


# --- opening and sniffing --------------------------------------------------------------------


def sniff_file(path: Path, size_limit_bytes: int | None = None) -> FileInfo:
    """Check that `path` is a readable, non-empty file of a known kind, and how to decode it."""
    size = _checked_size(path)
    if size_limit_bytes is not None and size > size_limit_bytes:
        raise BadInputError(
            f"{display(path.name)} is {_human_size(size)}, over the import limit of "
            f"{_human_size(size_limit_bytes)}; raise the limit in Settings or import a smaller "
            "file."
        )
    suffix = path.suffix.lower()
    container = container_for(path)
    head = _read_head(path)
    encoding = "utf-8" if container == "parquet" else sniff_encoding(head, path, container)
    if container == "json" and _looks_like_json_lines(path, encoding):
        container = "jsonl"
    return FileInfo(
        path, display(path.name), container, CONTAINER_EXTENSIONS[suffix], encoding, size
    )


def container_for(path: Path) -> str:
    """The container its extension names; BadInputError for one this app cannot read."""
    container = CONTAINERS.get(path.suffix.lower())
    if container is None:
        raise BadInputError(
            f"{display(path.name)} is not a kind of file that can be imported; "
            "use JSON, JSON Lines, CSV, TSV, Parquet or plain text (.txt)."
        )
    return container


def _checked_size(path: Path) -> int:
    try:
        if path.is_dir():
            raise BadInputError(
                f"{display(str(path))} is a folder, not a file; choose a dataset file instead."
            )
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise BadInputError(
            f"{display(str(path))} does not exist; check the path and try again."
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BadInputError(
            f"{display(path.name)} cannot be read ({reason.lower()}); "
            "check that the file is readable."
        ) from None
    if size == 0:
        raise BadInputError(f"{display(path.name)} is empty; choose a file that holds records.")
    return size


def _read_head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(HEAD_BYTES)


def sniff_encoding(head: bytes, path: Path, container: str) -> str:
    """The codec for a text file from its first bytes: a BOM, else UTF-8, else cp1252.

    The whole file is checked while it is copied (`EncodingCheck`); this only looks at `head`.
    """
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\x00" in head:
        kind = CONTAINER_NAMES[container]
        raise BadInputError(
            f"{display(path.name)} looks like a binary file, not {kind}; "
            f"choose a {kind} file or export the data as {kind} again."
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        ascii_before = head[: error.start].isascii()
        return "cp1252" if ascii_before and _decodes(head, "cp1252") else "utf-8"
    return "utf-8"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _looks_like_json_lines(path: Path, encoding: str) -> bool:
    """A `.json` file whose first line is a whole JSON object is JSON Lines (of one or more)."""
    with path.open("rb") as file:
        first = file.readline(_FIRST_LINE_LIMIT)
    text = first.decode(encoding, errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return False
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


class EncodingCheck:
    """Checks, chunk by chunk, that a whole file decodes with its codec; remembers where not."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._offset = 0
        self._newlines = 0
        self._ascii = True
        self.failure: tuple[int, int, int] | None = None  # offset, line, byte
        self.ascii_before_failure = True

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if self.failure is not None:
            return
        pending = self._decoder.getstate()[0]
        try:
            self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as error:
            self._fail(pending + chunk, error.start, len(pending))
        self._ascii = self._ascii and chunk.isascii()
        self._offset += len(chunk)
        self._newlines += chunk.count(b"\n")

    def _fail(self, data: bytes, start: int, pending: int) -> None:
        # `data` starts with the bytes the decoder held back from the previous chunk.
        line = self._newlines - data.count(b"\n", 0, pending) + data.count(b"\n", 0, start) + 1
        self.failure = (
            self._offset - pending + start,
            line,
            data[start] if start < len(data) else 0,
        )
        self.ascii_before_failure = self._ascii and data[:start].isascii()


def check_file(info: FileInfo) -> EncodingCheck:
    """Run the whole file through an EncodingCheck for its codec."""
    check = EncodingCheck("utf-8-sig" if info.encoding == "utf-8" else info.encoding)
    with info.path.open("rb") as file:
        while chunk := file.read(1 << 20):
            check.feed(chunk)
    check.feed(b"", final=True)
    return check


def resolve_encoding(info: FileInfo) -> FileInfo:
    """The codec to read the file with, after reading it as `info.encoding` failed somewhere.

    A file that is not UTF-8 but decodes strictly as cp1252 (what Windows programs such as Excel
    save) is read as cp1252, but only when everything before the first bad byte is ASCII: a
    UTF-8 file with one damaged byte must not be silently read as cp1252.
    """
    check = check_file(info)
    if check.failure is None:
        return info
    fallback = replace(info, encoding="cp1252")
    if info.encoding == "utf-8" and check.ascii_before_failure and not check_file(fallback).failure:
        return fallback
    offset, line, byte = check.failure
    if info.encoding in ("utf-16", "utf-32"):
        where, kind = f"at offset {offset}", info.encoding.upper()
    else:
        where, kind = f"at line {line} (offset {offset})", "UTF-8"
    raise BadInputError(
        f"{info.name} is not {kind} text: byte 0x{byte:02x} {where} cannot be decoded; "
        "save the file as UTF-8 and import it again."
    )


def _raise_if_not_utf8(data: bytes) -> None:
    """Raise UnicodeDecodeError when `data` is not UTF-8 (orjson only says "invalid JSON")."""
    data.decode("utf-8")


def _human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]  # int becomes float from here on
    raise AssertionError("unreachable")


# --- reading ----------------------------------------------------------------------------------


def read_records(
    info: FileInfo, position: ReadPosition | None = None
) -> Generator[Item, None, None]:
    """Every record of the file `info` describes, in order."""
    position = position or ReadPosition()
    readers = {
        "json": _read_json_array,
        "jsonl": _read_json_lines,
        "csv": _read_delimited,
        "tsv": _read_delimited,
        "parquet": _read_parquet,
        "txt": _read_text,
    }
    return readers[info.container](info, position)


def _read_json_lines(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    if info.encoding not in ("utf-8", "utf-8-sig"):
        yield from _read_json_lines_text(info, position)
        return
    index = 0
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with info.path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            position.bytes_read += len(raw)
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]  # noqa: PLW2901  # the BOM belongs to the file, not the record
            if not raw.strip():
                continue
            try:
                data = loads(raw)
            except decode_error as error:
                _raise_if_not_utf8(raw)
                yield UnreadableRecord(index, number, _json_reason(error))
            else:
                if type(data) is dict:
                    yield RawRecord(index, number, data, raw)
                else:
                    yield _object_or_unreadable(index, number, data, raw)
            index += 1


def _read_json_lines_text(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    index = 0
    with _open_text(info) as file:
        for number, line in enumerate(file, 1):
            position.bytes_read = _raw_position(file)
            if not line.strip():
                continue
            try:
                data = orjson.loads(line.lstrip("\ufeff"))
            except orjson.JSONDecodeError as error:
                yield UnreadableRecord(index, number, _json_reason(error))
            else:
                yield _object_or_unreadable(index, number, data, None)
            index += 1


def _object_or_unreadable(index: int, line: int, data: Any, raw: bytes | None) -> Item:
    if type(data) is dict:
        return RawRecord(index, line, data, raw)
    return UnreadableRecord(index, line, f"it is a JSON {_json_kind(data)}, not an object")


def _json_reason(error: orjson.JSONDecodeError) -> str:
    return f"it is not valid JSON ({_first_clause(error.msg)} at column {error.colno})"


def _first_clause(message: str) -> str:
    """The first clause of a library's message, to quote inside one of ours."""
    if not message.strip():
        return "parse error"
    first = message.strip().splitlines()[0].split(": line ")[0]
    return display(first.split(". ")[0].rstrip("."))


def _json_kind(value: Any) -> str:
    kinds = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }
    return "null" if value is None else kinds.get(type(value), "value")


def _read_json_array(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    records = load_json_array(info)
    position.bytes_read = 0
    step = info.size_bytes / max(len(records), 1)
    for index, data in enumerate(records):
        position.bytes_read = int((index + 1) * step)
        yield _object_or_unreadable(index, None, data, None)  # type: ignore[arg-type]


def load_json_array(info: FileInfo) -> list[Any]:
    """The parsed top-level array of a JSON file; BadInputError when it is not one."""
    data = info.path.read_bytes()
    document: bytes | str = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    if info.encoding not in ("utf-8", "utf-8-sig"):
        document = data.decode(info.encoding)
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        if isinstance(document, bytes):
            _raise_if_not_utf8(document)
        raise BadInputError(
            f"{info.name} is not valid JSON ({_first_clause(error.msg)} at line "
            f"{error.lineno}, column {error.colno}); it may be cut short, so export it again."
        ) from None
    if not isinstance(parsed, list):
        raise BadInputError(
            f"{info.name} holds a JSON {_json_kind(parsed)}, not an array of records; "
            "export the records as a JSON array or as JSON Lines (one object per line)."
        )
    return parsed


def array_record_line(info: FileInfo, index: int) -> int | None:
    """The line on which element `index` of a JSON array starts (for error messages only)."""
    import json

    try:
        text = info.path.read_bytes().decode(info.encoding)
        decoder, offset = json.JSONDecoder(), text.index("[") + 1
        for _ in range(index + 1):
            offset = _skip_separators(text, offset)
            start = offset
            _, offset = decoder.raw_decode(text, offset)
    except (ValueError, UnicodeDecodeError):
        return None
    return text.count("\n", 0, start) + 1


def _skip_separators(text: str, offset: int) -> int:
    while offset < len(text) and text[offset] in " \t\r\n,\ufeff":
        offset += 1
    return offset


def _read_delimited(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    delimiter = "\t" if info.container == "tsv" else ","
    _allow_long_cells()
    with _open_text(info, newline="") as file:
        rows = csv.reader(file, delimiter=delimiter, strict=True)
        header = _csv_header(rows, info)
        yield from _csv_rows(rows, header, info, file, position)


def _csv_header(rows: Any, info: FileInfo) -> list[str]:
    try:
        for row in rows:
            if any(cell.strip() for cell in row):
                return [cell.strip().lstrip("\ufeff") for cell in row]
    except csv.Error as error:
        raise _csv_error(info, rows.line_num, error) from None
    raise BadInputError(f"{info.name} holds no records; choose a file that holds data rows.")


def _csv_rows(
    rows: Any, header: list[str], info: FileInfo, file: IO[str], position: ReadPosition
) -> Generator[Item, None, None]:
    index, width, line = 0, len(header), rows.line_num + 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as error:
            raise _csv_error(info, line, error) from None
        position.bytes_read = _raw_position(file)
        if row and any(row):
            yield _csv_item(index, line, header, row, width)
            index += 1
        line = rows.line_num + 1


def _csv_item(index: int, line: int, header: list[str], row: list[str], width: int) -> Item:
    if len(row) != width:
        reason = f"it has {len(row)} cells but the header has {width} columns"
        return UnreadableRecord(index, line, reason)
    return RawRecord(index, line, dict(zip(header, row, strict=True)))


def _csv_error(info: FileInfo, line: int, error: csv.Error) -> BadInputError:
    kind = CONTAINER_NAMES[info.container]
    return BadInputError(
        f"{info.name}: line {line} cannot be read as {kind} ({_first_clause(str(error))}); "
        f"fix the row or export the file as {kind} again."
    )


def _allow_long_cells() -> None:
    # The default limit (128 KiB) rejects the long answers datasets hold; allow 256 MiB cells.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 1 << 28)))


def _read_parquet(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    pa, pq = _pyarrow(info)
    try:
        parquet = pq.ParquetFile(info.path)
        total_rows = max(parquet.metadata.num_rows, 1)
        index = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                yield RawRecord(index, None, data)
                index += 1
            position.bytes_read = info.size_bytes * index // total_rows
    except (pa.ArrowException, OSError) as error:
        raise BadInputError(
            f"{info.name} is not a readable Parquet file ({_first_clause(str(error))}); "
            "export it as Parquet again."
        ) from None


def _pyarrow(info: FileInfo) -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet; BadInputError where this build goes without them.

    The GUI-only build leaves pyarrow out (it is a third of that bundle). The first record read
    raises, before anything is converted, so the importer keeps nothing of the file.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BadInputError(
            f"{info.name} is a Parquet file, and this build of Model Training Manager cannot "
            "read Parquet; export it as JSON Lines or CSV, or use the full build."
        ) from None
    return pa, pq


def _read_text(info: FileInfo, position: ReadPosition) -> Generator[Item, None, None]:
    by_paragraph = _has_blank_line(info)
    index = 0
    with _open_text(info) as file:
        block: list[str] = []
        start = 0
        for number, line in enumerate(file, 1):
            position.bytes_read = _raw_position(file)
            text = line.rstrip("\r\n")
            if text.strip() and not by_paragraph:
                yield RawRecord(index, number, {"text": text})
                index += 1
            elif text.strip():
                start = start or number
                block.append(text)
            elif block:
                yield RawRecord(index, start, {"text": "\n".join(block)})
                index, block, start = index + 1, [], 0
        if block:
            yield RawRecord(index, start, {"text": "\n".join(block)})


def _has_blank_line(info: FileInfo) -> bool:
    """Whether a blank line separates two non-empty lines (leading and trailing ones do not)."""
    seen_text = seen_blank = False
    with _open_text(info) as file:
        for line in file:
            if not line.strip():
                seen_blank = seen_text
            elif seen_blank:
                return True
            else:
                seen_text = True
    return False


def _open_text(info: FileInfo, newline: str | None = None) -> IO[str]:
    # utf-8-sig reads plain UTF-8 too; utf-16 and utf-32 consume their BOM themselves.
    encoding = "utf-8-sig" if info.encoding == "utf-8" else info.encoding
    return info.path.open("r", encoding=encoding, newline=newline)


def _raw_position(file: IO[str]) -> int:
    buffer = getattr(file, "buffer", None)
    if isinstance(buffer, io.BufferedReader):
        return buffer.tell()
    return 0
