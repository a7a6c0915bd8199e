"""The Jobs table: its rows, item model, filter proxy and cell delegates (status badge, progress).

Rows are plain dataclasses read in one column query (no per-row queries, no JSON specs), so
10,000 jobs load in one go. While jobs train, `apply_event` updates a row in memory and marks it
dirty; `flush` repaints the dirty rows, which the tab calls a few times a second at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRectF,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)
from shiboken6 import isValid
from sqlalchemy import Select, func, select
from typing_extensions import override

from app.db.models import Job, JobMetric
from app.db.session import Database
from app.events import ErrorEvent, EvalEvent, Event, ProgressEvent, StartedEvent
from app.jobs.lifecycle import JobStatus
from app.workers.background import TaskContext, TaskFailure, TaskHandle, TaskRunner

Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
JOB_ID_ROLE = Qt.ItemDataRole.UserRole + 1
STATUS_ROLE = Qt.ItemDataRole.UserRole + 2
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 3  # a fraction from 0 to 1, or None
SORT_ROLE = Qt.ItemDataRole.UserRole + 4

STATUS_COLOURS = {
    JobStatus.QUEUED: "#6b7280",
    JobStatus.RUNNING: "#1d6fd8",
    JobStatus.COMPLETED: "#1e8e3e",
    JobStatus.FAILED: "#c5221f",
    JobStatus.CANCELLED: "#b06000",
    JobStatus.INTERRUPTED: "#8e24aa",
}


@dataclass(slots=True)
class JobRow:
    """One job as the table shows it."""

    id: str
    name: str
    dataset_name: str
    base_model: str
    method: str
    status: str
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_position: float | None = None
    # 1 for the queued job that starts next; set from queue_position when rows are read.
    queue_place: int | None = None

    @property
    def progress(self) -> float | None:
        if self.status == JobStatus.COMPLETED:
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else None

    def duration_seconds(self, now: datetime | None = None) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or (now or datetime.now(UTC))
        return max(0.0, (end - self.started_at).total_seconds())


_ROW_FIELDS = [f.name for f in fields(JobRow) if f.name != "queue_place"]


def _row_query() -> Select[Any]:
    return select(*[getattr(Job, name) for name in _ROW_FIELDS])


def _read_rows(database: Database, query: Select[Any]) -> list[JobRow]:
    with database.session() as session:
        rows = [JobRow(*row) for row in session.execute(query)]
    number_the_queue(rows)
    return rows


def number_the_queue(rows: list[JobRow]) -> None:
    """Set each queued row's place in the queue (among the rows given)."""
    queued = [row for row in rows if row.status == JobStatus.QUEUED]
    queued.sort(key=lambda row: (row.queue_position or 0.0, row.created_at, row.id))
    for place, row in enumerate(queued, start=1):
        row.queue_place = place


def load_job_rows(database: Database) -> list[JobRow]:
    """Every job, newest first, in one query of the columns the table shows."""
    return _read_rows(database, _row_query().order_by(Job.created_at.desc(), Job.id))


def load_running_rows(database: Database) -> list[JobRow]:
    """The jobs running now (in this or another process), oldest first."""
    query = _row_query().where(Job.status == JobStatus.RUNNING).order_by(Job.started_at)
    return _read_rows(database, query)


def load_recent_rows(database: Database, limit: int = 8) -> list[JobRow]:
    """The jobs that most recently finished, started or were queued."""
    latest = func.coalesce(Job.finished_at, Job.started_at, Job.created_at)
    return _read_rows(database, _row_query().order_by(latest.desc(), Job.id).limit(limit))


def count_jobs_by_status(database: Database) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    with database.session() as session:
        return {status: count for status, count in session.execute(query)}


@dataclass
class Curves:
    """A job's loss curves: training loss and evaluation loss by step."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)

    def add(self, step: int, loss: float | None, eval_loss: float | None) -> None:
        if loss is not None:
            self.steps.append(step)
            self.losses.append(loss)
        if eval_loss is not None:
            self.eval_steps.append(step)
            self.eval_losses.append(eval_loss)


def load_curves(database: Database, job_ids: Iterable[str]) -> dict[str, Curves]:
    """The recorded metric points of each job, by step (one indexed query)."""
    wanted = list(job_ids)
    curves: dict[str, Curves] = {job_id: Curves() for job_id in wanted}
    query = (
        select(JobMetric.job_id, JobMetric.step, JobMetric.loss, JobMetric.eval_loss)
        .where(JobMetric.job_id.in_(wanted))
        .order_by(JobMetric.job_id, JobMetric.step, JobMetric.id)
    )
    with database.session() as session:
        for job_id, step, loss, eval_loss in session.execute(query):
            curves[job_id].add(step, loss, eval_loss)
    return curves


def submit_for(
    owner: QObject,
    runner: TaskRunner,
    work: Callable[[TaskContext], object],
    on_success: Callable[[Any], None] | None = None,
    on_error: Callable[[TaskFailure], None] | None = None,
) -> TaskHandle:
    """`runner.submit`, with callbacks that are skipped once `owner` has been deleted: a result
    can arrive after the dialog or window that asked for it is gone."""

    def success(result: Any) -> None:
        if on_success is not None and isValid(owner):
            on_success(result)

    def error(failure: TaskFailure) -> None:
        if on_error is not None and isValid(owner):
            on_error(failure)

    return runner.submit(work, on_success=success, on_error=error)


# --- formatting ----------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`; empty for None."""
    if seconds is None:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""


def format_loss(loss: float | None) -> str:
    return "" if loss is None else f"{loss:.4f}"


def short_model_name(base_model: str) -> str:
    """A local path by its last part; a Hugging Face id as it is."""
    return Path(base_model).name if base_model.startswith(("/", "~", ".")) else base_model


# --- the model -----------------------------------------------------------------------------------


class JobTableModel(QAbstractTableModel):
    """One row per job, newest first."""

    HEADERS = (
        "Name",
        "Dataset",
        "Base model",
        "Method",
        "Status",
        "Progress",
        "Loss",
        "Tokens/s",
        "ETA",
        "Started",
        "Duration",
    )
    STATUS_COLUMN = 4
    PROGRESS_COLUMN = 5
    DURATION_COLUMN = 10
    _RIGHT_ALIGNED = frozenset({6, 7, 8, 10})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[JobRow] = []
        self._index: dict[str, int] = {}
        self._dirty: set[int] = set()

    # --- rows ------------------------------------------------------------------------------

    def set_rows(self, rows: list[JobRow]) -> None:
        """Show `rows`; in place when the same jobs are in the same order (selection and
        scrolling stay), else as a reset. Live figures newer than the database's are kept."""
        rows = [self._keep_live(row) for row in rows]
        if [row.id for row in rows] == [row.id for row in self._rows]:
            self._rows = rows
            self._dirty.update(range(len(rows)))
            self.flush()
            return
        self.beginResetModel()
        self._rows = rows
        self._index = {row.id: i for i, row in enumerate(rows)}
        self._dirty.clear()
        self.endResetModel()

    def _keep_live(self, row: JobRow) -> JobRow:
        old = self.job(row.id)
        if old is None or row.status != JobStatus.RUNNING or old.status != JobStatus.RUNNING:
            return row
        if old.step > row.step:  # the worker writes in batches; its events are newer
            for name in ("step", "total_steps", "loss", "eval_loss", "tokens_per_second"):
                setattr(row, name, getattr(old, name))
            row.eta_seconds = old.eta_seconds
        return row

    def job(self, job_id: str) -> JobRow | None:
        row = self._index.get(job_id)
        return self._rows[row] if row is not None else None

    def job_at(self, row: int) -> JobRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, job_id: str) -> int:
        return self._index.get(job_id, -1)

    def rows(self) -> list[JobRow]:
        return list(self._rows)

    def running_rows(self) -> list[int]:
        return [i for i, row in enumerate(self._rows) if row.status == JobStatus.RUNNING]

    def recent_base_models(self, limit: int = 10) -> list[str]:
        """The base models of the newest jobs, each once, newest first."""
        seen: dict[str, None] = {}
        for row in self._rows:
            seen.setdefault(row.base_model)
            if len(seen) >= limit:
                break
        return list(seen)

    # --- live updates ----------------------------------------------------------------------

    def apply_event(self, job_id: str, event: Event) -> bool:
        """Update the job's row from a trainer event; False when the job is not in the table."""
        row = self._index.get(job_id)
        if row is None:
            return False
        job = self._rows[row]
        if isinstance(event, StartedEvent):
            job.status, job.total_steps = JobStatus.RUNNING, event.total_steps
            job.step = event.resume_step
        elif isinstance(event, ProgressEvent):
            job.step, job.total_steps, job.loss = event.step, event.total_steps, event.loss
            job.tokens_per_second, job.eta_seconds = event.tokens_per_second, event.eta_seconds
        elif isinstance(event, EvalEvent):
            job.eval_loss = event.eval_loss
        elif isinstance(event, ErrorEvent):
            job.error = event.message
        else:
            return True
        self._dirty.add(row)
        return True

    @property
    def has_dirty_rows(self) -> bool:
        return bool(self._dirty)

    def flush(self) -> None:
        """Repaint the rows changed since the last flush."""
        last = len(self.HEADERS) - 1
        for row in sorted(self._dirty):
            if row < len(self._rows):
                self.dataChanged.emit(self.index(row, 0), self.index(row, last))
        self._dirty.clear()

    def tick(self) -> None:
        """Repaint the duration of running jobs (it grows while they run)."""
        column = self.DURATION_COLUMN
        for row in self.running_rows():
            self.dataChanged.emit(self.index(row, column), self.index(row, column))

    # --- Qt's model interface --------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if role == _DISPLAY and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        job = self.job_at(index.row()) if index.isValid() else None
        if job is None:
            return None
        column = index.column()
        if role == _DISPLAY:
            return display_text(job, column)
        if role == SORT_ROLE:
            return sort_key(job, column)
        return self._other_role(job, column, role)

    def _other_role(self, job: JobRow, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(job, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in self._RIGHT_ALIGNED:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == JOB_ID_ROLE:
            return job.id
        if role == STATUS_ROLE:
            return job.status
        if role == PROGRESS_ROLE:
            return job.progress
        return None


def display_text(job: JobRow, column: int) -> str:
    """The text of one cell."""
    running = job.status == JobStatus.RUNNING
    cells = (
        lambda: job.name,
        lambda: job.dataset_name,
        lambda: short_model_name(job.base_model),
        lambda: job.method,
        lambda: job.status,
        lambda: progress_text(job),
        lambda: format_loss(job.loss),
        lambda: f"{job.tokens_per_second:,.0f}" if job.tokens_per_second is not None else "",
        lambda: format_duration(job.eta_seconds) if running else "",
        lambda: format_time(job.started_at),
        lambda: format_duration(job.duration_seconds()),
    )
    return cells[column]()


def progress_text(job: JobRow) -> str:
    if job.status == JobStatus.QUEUED and job.queue_place is not None:
        return f"#{job.queue_place} in queue"
    if job.total_steps:
        return f"{job.step:,} / {job.total_steps:,}"
    return "starting…" if job.status == JobStatus.RUNNING else ""


def sort_key(job: JobRow, column: int) -> Any:
    """What a column sorts by: numbers as numbers, missing values first."""
    if column == 5:
        if job.queue_place is not None:  # queued jobs sort before started ones, in queue order
            return -1.0 - 1.0 / job.queue_place
        return job.progress if job.progress is not None else -1.0
    numbers = {6: job.loss, 7: job.tokens_per_second, 8: job.eta_seconds}
    if column in numbers:
        value = numbers[column]
        return value if value is not None else -1.0
    if column == 9:
        return job.started_at.timestamp() if job.started_at else 0.0
    if column == 10:
        return job.duration_seconds() or 0.0
    return display_text(job, column).casefold()


def tooltip(job: JobRow, column: int) -> str:
    if column == JobTableModel.STATUS_COLUMN and job.error:
        return job.error
    if column == 2:
        return job.base_model
    if column == 6 and job.eval_loss is not None:
        return f"Training loss {format_loss(job.loss)}; evaluation loss {job.eval_loss:.4f}"
    return f"{job.name} (id {job.id})"


# --- filtering -----------------------------------------------------------------------------------


class JobFilterProxy(QSortFilterProxyModel):
    """Only the jobs in one status (or all), whose name holds the search text."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._status: str | None = None
        self._search = ""
        self.setSortRole(SORT_ROLE)

    def set_status(self, status: str | None) -> None:
        if status != self._status:
            self.beginFilterChange()
            self._status = status
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_search(self, text: str) -> None:
        needle = text.strip().casefold()
        if needle != self._search:
            self.beginFilterChange()
            self._search = needle
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    @property
    def filtering(self) -> bool:
        return bool(self._status or self._search)

    @override
    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        job = model.job_at(source_row) if isinstance(model, JobTableModel) else None
        if job is None:
            return False
        if self._status and job.status != self._status:
            return False
        return not self._search or self._search in job.name.casefold()


# --- delegates -----------------------------------------------------------------------------------


class StatusBadgeDelegate(QStyledItemDelegate):
    """The status as a coloured rounded badge."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        status = index.data(STATUS_ROLE)
        text = str(index.data(_DISPLAY) or "")
        self._paint_background(painter, option)
        colour = QColor(STATUS_COLOURS.get(status, "#6b7280"))
        rect = QRectF(option.rect).adjusted(4, 4, -4, -4)
        width = min(rect.width(), option.fontMetrics.horizontalAdvance(text) + 16)
        badge = QRectF(rect.left(), rect.top(), width, rect.height())
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(badge, badge.height() / 2, badge.height() / 2)
        painter.setPen(QColor("white"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    @staticmethod
    def _paint_background(painter: QPainter, option: QStyleOptionViewItem) -> None:
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())


class ProgressBarDelegate(QStyledItemDelegate):
    """The progress as a progress bar with `step / total` on it."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        fraction = index.data(PROGRESS_ROLE)
        StatusBadgeDelegate._paint_background(painter, option)
        if fraction is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 3, -3, -3)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = round(fraction * 1000)
        bar.text = str(index.data(_DISPLAY) or "")
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        palette = QPalette(option.palette)
        palette.setColor(QPalette.ColorRole.Highlight, QColor(_bar_colour(index)))
        bar.palette = palette
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        style = QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


def _bar_colour(index: Index) -> str:
    status = index.data(STATUS_ROLE)
    return STATUS_COLOURS.get(status, STATUS_COLOURS[JobStatus.RUNNING])
