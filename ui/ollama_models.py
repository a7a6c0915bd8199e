"""Item models for the Models tab: the models Ollama has (/api/tags), a filter over them, and the
models loaded in memory now (/api/ps)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from typing_extensions import override

from app.ollama.types import ModelSummary, RunningModel

Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
# Numbers sort as floats: some PySide versions pass a Python int to Qt as a 32-bit int, and a
# size or parameter count over 2**31 would wrap around and sort as negative.
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
NAME_ROLE = Qt.ItemDataRole.UserRole + 2
# keep_alive -1 makes Ollama report an expiry centuries away (2319-03-13…): "until unloaded".
_FOREVER_AFTER_DAYS = 365 * 50
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_HUMAN_NUMBER = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMBT]?)\s*", re.IGNORECASE)


def format_size(count: int) -> str:
    """Bytes in decimal units, as `ollama list` shows them: `270.9 MB`, `4.7 GB`."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count:,} B"


def format_local_time(moment: datetime | None) -> str:
    """A timestamp in this machine's time zone, to the minute; empty for None."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""


def parameter_count(parameter_size: str) -> int:
    """`135M` → 135,000,000 (Ollama's human-readable parameter_size); 0 when unreadable."""
    match = _HUMAN_NUMBER.fullmatch(parameter_size)
    if not match:
        return 0
    return int(float(match.group(1)) * _SCALE[match.group(2).upper()])


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment else 0.0


class _RowTable(QAbstractTableModel):
    """A read-only table of rows; subclasses say what each column shows and sorts by."""

    HEADERS: tuple[str, ...] = ()
    RIGHT_ALIGNED: frozenset[int] = frozenset()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []

    def _set_rows(self, rows: Sequence[Any]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def _row(self, row: int) -> Any:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def names(self) -> list[str]:
        return [row.name for row in self._rows]

    def row_of(self, name: str) -> int:
        """The row of the model called `name` (case does not matter, as for Ollama); -1 if none."""
        wanted = name.casefold()
        for row, item in enumerate(self._rows):
            if item.name.casefold() == wanted:
                return row
        return -1

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if role == _DISPLAY and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        item = self._row(index.row()) if index.isValid() else None
        if item is None:
            return None
        column = index.column()
        if role == _DISPLAY:
            return self._text(item, column)
        if role == SORT_ROLE:
            return self._sort_key(item, column)
        if role == NAME_ROLE:
            return item.name
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(item)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in self.RIGHT_ALIGNED:
            return _RIGHT
        return None

    def _text(self, item: Any, column: int) -> str:
        raise NotImplementedError

    def _sort_key(self, item: Any, column: int) -> Any:
        raise NotImplementedError

    def _tooltip(self, item: Any) -> str:
        raise NotImplementedError


class OllamaModelTable(_RowTable):
    """The local models of /api/tags, one per row, in the order Ollama gives (newest first).

    SORT_ROLE gives numbers for Parameters, Size and Modified, so they sort by value.
    """

    HEADERS = ("Name", "Family", "Parameters", "Quantisation", "Size", "Modified")
    NAME, FAMILY, PARAMETERS, QUANTISATION, SIZE, MODIFIED = range(6)
    RIGHT_ALIGNED = frozenset({PARAMETERS, SIZE})

    def set_models(self, models: Sequence[ModelSummary]) -> None:
        self._set_rows(models)

    def model_at(self, row: int) -> ModelSummary | None:
        item: ModelSummary | None = self._row(row)
        return item

    def _text(self, item: ModelSummary, column: int) -> str:
        cells: tuple[Callable[[], str], ...] = (
            lambda: item.name,
            lambda: item.details.family,
            lambda: item.details.parameter_size,
            lambda: item.details.quantization_level,
            lambda: format_size(item.size),
            lambda: format_local_time(item.modified_at),
        )
        return cells[column]()

    def _sort_key(self, item: ModelSummary, column: int) -> Any:
        if column == self.PARAMETERS:
            return float(parameter_count(item.details.parameter_size))
        if column == self.SIZE:
            return float(item.size)
        if column == self.MODIFIED:
            return _timestamp(item.modified_at)
        return self._text(item, column).casefold()

    def _tooltip(self, item: ModelSummary) -> str:
        modified = item.modified_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return f"{item.name}\n{item.size:,} bytes, modified {modified}\ndigest {item.digest[:12]}"


class ModelFilterProxy(QSortFilterProxyModel):
    """The models whose name or family holds the filter text, sorted by SORT_ROLE."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._needle = ""
        self.setSortRole(SORT_ROLE)

    def set_filter_text(self, text: str) -> None:
        needle = text.strip().casefold()
        if needle != self._needle:
            self.beginFilterChange()
            self._needle = needle
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    @property
    def filtering(self) -> bool:
        return bool(self._needle)

    @override
    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        source = self.sourceModel()
        item = source.model_at(source_row) if isinstance(source, OllamaModelTable) else None
        if item is None:
            return False
        haystack = f"{item.name} {item.details.family}".casefold()
        return not self._needle or self._needle in haystack


class LoadedModelTable(_RowTable):
    """The models in memory now (/api/ps), the one kept longest first, as Ollama sorts them."""

    HEADERS = ("Name", "In memory", "In VRAM", "Until")
    NAME, MEMORY, VRAM, UNTIL = range(4)
    RIGHT_ALIGNED = frozenset({MEMORY, VRAM})

    def set_models(self, models: Sequence[RunningModel]) -> None:
        self._set_rows(models)

    def model_at(self, row: int) -> RunningModel | None:
        item: RunningModel | None = self._row(row)
        return item

    def _text(self, item: RunningModel, column: int) -> str:
        cells: tuple[Callable[[], str], ...] = (
            lambda: item.name,
            lambda: format_size(item.size),
            lambda: format_size(item.size_vram) if item.size_vram else "none (CPU)",
            lambda: expiry_text(item.expires_at),
        )
        return cells[column]()

    def _sort_key(self, item: RunningModel, column: int) -> Any:
        if column == self.MEMORY:
            return float(item.size)
        if column == self.VRAM:
            return float(item.size_vram)
        if column == self.UNTIL:
            return _timestamp(item.expires_at)
        return item.name.casefold()

    def _tooltip(self, item: RunningModel) -> str:
        context = f", context {item.context_length:,} tokens" if item.context_length else ""
        return f"{item.name}: {item.size:,} bytes in memory, {item.size_vram:,} in VRAM{context}"


def expiry_text(expires_at: datetime | None, now: datetime | None = None) -> str:
    """When Ollama unloads the model: a local time, or "until unloaded" for keep_alive -1."""
    if expires_at is None:
        return ""
    now = now or datetime.now(UTC)
    if (expires_at - now).days > _FOREVER_AFTER_DAYS:
        return "until unloaded"
    local = expires_at.astimezone()
    same_day = local.date() == now.astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")
