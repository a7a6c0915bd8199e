"""Paging through a JSON Lines file without reading all of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


class RecordPager:
    """Reads a JSON Lines file a page at a time, continuing where the last page ended.

    It remembers a byte offset, not an open file: each `read` opens, seeks and closes, so a pager
    left lying in a view holds no file handle.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records_read = 0
        self.at_end = False

    def read(self, count: int) -> list[dict[str, Any]]:
        """The next `count` records (fewer at the end of the file); blank lines are skipped."""
        records: list[dict[str, Any]] = []
        if self.at_end or count <= 0:
            return records
        with self.path.open("rb") as file:
            file.seek(self.offset)
            while len(records) < count:
                line = file.readline()
                if not line:
                    self.at_end = True
                    break
                if line.strip():
                    records.append(orjson.loads(line))
            self.offset = file.tell()
            self.at_end = self.at_end or not file.read(1)
        self.records_read += len(records)
        return records
