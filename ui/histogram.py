"""A small bar chart of record lengths, painted directly (no plotting library needed)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget


def _short(value: float) -> str:
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= factor:
            scaled = value / factor
            return f"{scaled:.0f}{suffix}" if scaled >= 10 else f"{scaled:.1f}{suffix}"
    return f"{value:.0f}"


class LengthHistogram(QWidget):
    """Counts per length bin; `edges` has one more entry than `counts`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._edges: list[float] = []
        self._counts: list[int] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(110)

    def sizeHint(self) -> QSize:
        return QSize(320, 120)

    def set_histogram(self, edges: list[float], counts: list[int]) -> None:
        # Trim empty bins at both ends so the bars use the width.
        nonzero = [i for i, count in enumerate(counts) if count]
        if nonzero:
            first, last = nonzero[0], nonzero[-1]
            self._counts = list(counts[first : last + 1])
            self._edges = list(edges[first : last + 2])
        else:
            self._edges, self._counts = [], []
        self.setToolTip(self._tooltip())
        self.update()

    def _tooltip(self) -> str:
        rows = [
            f"{_short(self._edges[i])}–{_short(self._edges[i + 1])} characters: {count:,}"
            for i, count in enumerate(self._counts)
        ]
        return "\n".join(rows)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        palette = self.palette()
        area = QRectF(self.rect()).adjusted(4, 4, -4, -18)
        if not self._counts:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No lengths to show")
            return
        peak = max(self._counts)
        width = area.width() / len(self._counts)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
        for i, count in enumerate(self._counts):
            height = area.height() * count / peak
            painter.drawRect(
                QRectF(
                    area.left() + i * width + 1, area.bottom() - height, max(width - 2, 1), height
                )
            )
        painter.setPen(palette.color(QPalette.ColorRole.WindowText))
        label_rect = QRectF(area.left(), area.bottom() + 2, area.width(), 14)
        painter.drawText(label_rect, Qt.AlignmentFlag.AlignLeft, _short(self._edges[0]))
        painter.drawText(label_rect, Qt.AlignmentFlag.AlignCenter, "characters per record")
        painter.drawText(label_rect, Qt.AlignmentFlag.AlignRight, _short(self._edges[-1]))
