"""A live chart of training and evaluation loss by step, for one job or several compared.

pyqtgraph is imported when the first chart is built, so the window opens without it; the Jobs
tab builds it once it has been on screen a moment. (Importing it on a worker thread instead crashes
shiboken's import hook when the GUI thread is busy with Qt at the same time.) Live points are
appended to in-memory curves and drawn at most a few times a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QStackedLayout, QWidget

from ui.job_models import Curves

_REDRAW_MS = 250
# Distinct on light and dark backgrounds; a job keeps its colour while it is shown.
SERIES_COLOURS = ("#1d6fd8", "#e8710a", "#1e8e3e", "#c5221f", "#8e24aa", "#00838f", "#6d4c41")


@dataclass
class _Series:
    label: str
    curves: Curves
    colour: str
    items: list[Any] = field(default_factory=list)  # the train and eval PlotDataItems


class LossChart(QWidget):
    """Training loss (solid) and evaluation loss (dashed, with dots) against the step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series: dict[str, _Series] = {}
        self._dirty: set[str] = set()
        self._layout = QStackedLayout(self)
        self.message_label = QLabel()
        self.message_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message_label.setWordWrap(True)
        self._layout.addWidget(self.message_label)
        self._plot: Any = None
        self._redraw_timer = QTimer(self, singleShot=True, interval=_REDRAW_MS)
        self._redraw_timer.timeout.connect(self.on_redraw_timer_timeout)
        self.setMinimumHeight(180)
        self.show_message("Select a job to see its loss curves.")

    @property
    def prepared(self) -> bool:
        return self._plot is not None

    def prepare(self) -> None:
        """Build the plot now (importing pyqtgraph, half a second once), so that showing the
        first job later is quick."""
        self._ensure_plot()

    # --- what is shown -----------------------------------------------------------------------

    def show_message(self, text: str) -> None:
        """No curves: say why, and what to do."""
        self._clear()
        self.message_label.setText(text)
        self._layout.setCurrentWidget(self.message_label)

    def set_series(self, series: list[tuple[str, str, Curves]]) -> None:
        """Show the curves of each (key, label, curves); a legend names them when several."""
        self._clear()
        plot = self._ensure_plot()
        plot.addLegend(offset=(-10, 10))
        for number, (key, label, curves) in enumerate(series):
            colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            entry = _Series(label, curves, colour)
            entry.items = self._make_items(plot, label, colour, several=len(series) > 1)
            self._series[key] = entry
            self._draw(entry)
        self._layout.setCurrentWidget(plot)
        self._update_empty_note()

    def append(
        self, key: str, step: int, loss: float | None = None, eval_loss: float | None = None
    ) -> None:
        """Add a live point to a shown job's curves (drawn within a quarter of a second)."""
        entry = self._series.get(key)
        if entry is None:
            return
        entry.curves.add(step, loss, eval_loss)
        self._dirty.add(key)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def curves(self, key: str) -> Curves | None:
        entry = self._series.get(key)
        return entry.curves if entry else None

    @property
    def keys(self) -> list[str]:
        return list(self._series)

    # --- drawing -----------------------------------------------------------------------------

    def on_redraw_timer_timeout(self) -> None:
        for key in self._dirty:
            if key in self._series:
                self._draw(self._series[key])
        self._dirty.clear()
        self._update_empty_note()

    def _draw(self, entry: _Series) -> None:
        train, evaluation = entry.items
        train.setData(entry.curves.steps, entry.curves.losses)
        evaluation.setData(entry.curves.eval_steps, entry.curves.eval_losses)

    def _update_empty_note(self) -> None:
        if self._plot is None:
            return
        empty = not any(e.curves.steps or e.curves.eval_steps for e in self._series.values())
        title = "No loss recorded yet: the curves fill in as the job trains." if empty else ""
        self._plot.setTitle(title, size="9pt")

    def _ensure_plot(self) -> Any:
        if self._plot is None:
            self._plot = _build_plot(self.palette())
            self._layout.addWidget(self._plot)
            self._layout.setCurrentWidget(self.message_label)
        return self._plot

    def _make_items(self, plot: Any, label: str, colour: str, several: bool) -> list[Any]:
        import pyqtgraph as pg

        train_name = f"{label}: training" if several else "training loss"
        eval_name = f"{label}: evaluation" if several else "evaluation loss"
        train = plot.plot(name=train_name, pen=pg.mkPen(colour, width=2))
        evaluation = plot.plot(
            name=eval_name,
            pen=pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine),
            symbol="o",
            symbolSize=6,
            symbolBrush=colour,
            symbolPen=None,
        )
        return [train, evaluation]

    def _clear(self) -> None:
        self._series.clear()
        self._dirty.clear()
        if self._plot is not None:
            self._plot.clear()
            legend = self._plot.getPlotItem().legend
            if legend is not None:
                legend.scene().removeItem(legend)
                self._plot.getPlotItem().legend = None


def _build_plot(palette: QPalette) -> Any:
    import pyqtgraph as pg

    plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
    foreground = palette.color(QPalette.ColorRole.Text)
    for side in ("left", "bottom"):
        axis = plot.getAxis(side)
        axis.setPen(foreground)
        axis.setTextPen(foreground)
    plot.setLabel("left", "loss")
    plot.setLabel("bottom", "step")
    # No grid: pyqtgraph draws it with the axes, and it costs five times the curves' repaint.
    plot.setMenuEnabled(False)
    # A long run records a point every quarter of a second: draw only what the pixels show.
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    return plot
