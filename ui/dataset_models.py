"""Item models for the Datasets tab: the list of datasets, and a lazily paged record preview."""

from __future__ import annotations

from typing import Any

import orjson
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from app.datasets.preview import RecordPager
from app.db.models import Dataset

Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_PREVIEW_CHARS = 240  # one line of a table cell; the full record shows below the table


class DatasetTableModel(QAbstractTableModel):
    """One row per dataset, newest first."""

    HEADERS = ("Name", "Format", "Records", "Invalid", "Imported")

    def __init__(self) -> None:
        super().__init__()
        self._datasets: list[Dataset] = []

    def set_datasets(self, datasets: list[Dataset]) -> None:
        self.beginResetModel()
        self._datasets = list(datasets)
        self.endResetModel()

    def dataset_at(self, row: int) -> Dataset | None:
        return self._datasets[row] if 0 <= row < len(self._datasets) else None

    def row_of(self, dataset_id: str) -> int:
        for row, dataset in enumerate(self._datasets):
            if dataset.id == dataset_id:
                return row
        return -1

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._datasets)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if role == _DISPLAY and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        dataset = self.dataset_at(index.row()) if index.isValid() else None
        if dataset is None:
            return None
        if role == _DISPLAY:
            return self._cell(dataset, index.column())
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (2, 3):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{dataset.source_name} ({dataset.container}), id {dataset.id}"
        return None

    @staticmethod
    def _cell(dataset: Dataset, column: int) -> str:
        if column == 0:
            return dataset.name
        if column == 1:
            return dataset.format
        if column == 2:
            return f"{dataset.rows:,}"
        if column == 3:
            return f"{dataset.invalid_rows:,}"
        return dataset.created_at.astimezone().strftime("%Y-%m-%d %H:%M")


def render_messages(record: dict[str, Any], limit: int | None = None) -> str:
    """A canonical record as readable text: `role: content` per turn, or the text itself."""
    if "messages" in record:
        lines = [f"{_speaker(m)}: {m.get('content', '')}" for m in record["messages"]]
        text = "\n".join(lines)
    else:
        text = str(record.get("text", ""))
    return _shorten(text, limit)


def _speaker(message: dict[str, Any]) -> str:
    role = str(message.get("role", "?"))
    return f"{role} (tool call)" if message.get("tool_call") else role


def render_json(record: dict[str, Any], limit: int | None = None, indent: bool = False) -> str:
    option = orjson.OPT_INDENT_2 if indent else 0
    return _shorten(orjson.dumps(record, option=option).decode(), limit)


def _shorten(text: str, limit: int | None) -> str:
    if limit is None:
        return text
    flat = " ⏎ ".join(text.splitlines())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class RecordPreviewModel(QAbstractTableModel):
    """Original and normalised records side by side, read page by page as the view scrolls.

    Only the rows scrolled into view are ever read, so a million-record dataset opens as fast
    as a small one.
    """

    HEADERS = ("Original", "Normalised")
    PAGE = 200

    def __init__(self, source_path: Any = None, records_path: Any = None) -> None:
        super().__init__()
        self._originals: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._source = RecordPager(source_path) if source_path else None
        self._normalised = RecordPager(records_path) if records_path else None

    def record_at(self, row: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if 0 <= row < len(self._records):
            return self._originals[row], self._records[row]
        return None

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if role != _DISPLAY:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return str(section + 1)

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        pair = self.record_at(index.row()) if index.isValid() else None
        if pair is None or role != _DISPLAY:
            return None
        original, normalised = pair
        if index.column() == 0:
            return render_json(original, _PREVIEW_CHARS)
        return render_messages(normalised, _PREVIEW_CHARS)

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        if parent.isValid() or self._normalised is None:
            return False
        return not self._normalised.at_end

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        if not self.canFetchMore(parent):
            return
        assert self._normalised is not None and self._source is not None
        records = self._normalised.read(self.PAGE)
        originals = self._source.read(len(records))
        if not records:
            return
        first = len(self._records)
        self.beginInsertRows(QModelIndex(), first, first + len(records) - 1)
        self._records.extend(records)
        self._originals.extend(originals + [{}] * (len(records) - len(originals)))
        self.endInsertRows()
