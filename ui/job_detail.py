"""The Jobs tab's detail pane: the selected job's figures, live loss chart, log (following the
tail of its events.jsonl, searchable), artifacts with Open folder, and the action buttons; or
the loss curves of several selected jobs compared.
"""

from __future__ import annotations

import html
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QColor, QDesktopServices, QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.db.models import Job
from app.events import ErrorEvent, EvalEvent, Event, LogEvent, ProgressEvent, parse_event
from app.jobs.lifecycle import ACTIVE, RESUMABLE, RETRYABLE, JobStatus
from app.jobs.service import get_job, job_dir, target_of
from app.workers.background import TaskFailure, TaskRunner
from ui.dialogs import ERROR_STYLE
from ui.job_models import (
    STATUS_COLOURS,
    Curves,
    JobRow,
    format_duration,
    format_loss,
    format_time,
    load_curves,
    submit_for,
)
from ui.loss_chart import LossChart

EVENTS_FILE = "events.jsonl"
LOG_LINES = 2000  # the log view keeps the newest lines; the whole log stays in events.jsonl
SELECT_TEXT = (
    "Select a job to see its progress, loss curves and log; select several to compare their "
    "loss curves."
)


@dataclass(frozen=True)
class LogLine:
    time: float
    level: str
    message: str

    def render(self) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"{clock}  {self.level:<7} {self.message}"


def read_log(path: Path, limit: int = LOG_LINES) -> list[LogLine]:
    """The newest log and error lines of a job's events.jsonl (empty before the job started)."""
    lines: deque[LogLine] = deque(maxlen=limit)
    try:
        with path.open("rb") as file:
            for raw in file:
                if b'"event":"log"' in raw or b'"event":"error"' in raw:
                    line = log_line(parse_event(raw))
                    if line is not None:
                        lines.append(line)
    except FileNotFoundError:
        return []
    return list(lines)


def log_line(event: Event) -> LogLine | None:
    if isinstance(event, LogEvent):
        return LogLine(event.time, event.level, event.message)
    if isinstance(event, ErrorEvent):
        return LogLine(event.time, "error", event.message)
    return None


@dataclass
class _Loaded:
    """What the detail pane reads when one job is selected."""

    job: Job
    curves: Curves
    log: list[LogLine]


class JobDetailPane(QWidget):
    """The selected job: figures, chart, log, artifacts and the action buttons (the tab
    connects the buttons)."""

    def __init__(self, context: AppContext, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._ids: list[str] = []
        self._generation = 0
        self._pending: list[Event] = []  # live events that arrive while the job is loading
        self._loading = False
        self._log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self._cancelling: set[str] = set()  # asked to stop, still saving their checkpoint
        self.job: Job | None = None
        self._build()
        self.show_jobs([], force=True)

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        info = QWidget()
        column = QVBoxLayout(info)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(self._build_header())
        column.addLayout(self._build_actions())
        column.addLayout(self._build_progress())
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.error_label)
        column.addLayout(self._build_artifacts())
        column.addWidget(self._build_log(), 1)
        self.chart = LossChart()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(info)
        splitter.addWidget(self.chart)
        splitter.setSizes([560, 600])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def _build_header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.title_label = QLabel(wordWrap=True)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel()
        row.addWidget(self.title_label, 1)
        row.addWidget(self.status_label, 0, Qt.AlignmentFlag.AlignTop)
        return row

    def _build_actions(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the job; a running one saves a checkpoint first")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Queue it again; it continues from its last checkpoint")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Queue it again from the start; its results so far go")
        self.duplicate_button = QPushButton("Duplicate…")
        self.duplicate_button.setToolTip("A new job with the same settings, to change and queue")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Remove the job and its files")
        self.queue_button = self._build_queue_button()
        self.publish_button = QPushButton("Publish to Ollama…")
        self.publish_button.setToolTip("Make the fine-tuned model an Ollama model, in one go")
        self.evaluate_button = QPushButton("Evaluate…")
        self.evaluate_button.setToolTip(
            "Ask the published model and its base the validation examples, side by side"
        )
        self.action_buttons = (
            self.cancel_button,
            self.resume_button,
            self.retry_button,
            self.queue_button,
            self.publish_button,
            self.evaluate_button,
            self.duplicate_button,
            self.delete_button,
        )
        for button in self.action_buttons:
            row.addWidget(button)
        row.addStretch(1)
        return row

    def _build_queue_button(self) -> QPushButton:
        """A queued job's place: up, down, to the front or the back (the tab connects them)."""
        button = QPushButton("Queue")
        button.setToolTip("Change when this queued job starts")
        menu = QMenu(button)
        self.move_actions: dict[str, QAction] = {}
        for move, text in (
            ("front", "Start next"),
            ("up", "Move up"),
            ("down", "Move down"),
            ("back", "Move to the back"),
        ):
            self.move_actions[move] = menu.addAction(text)
        button.setMenu(menu)
        return button

    def _build_progress(self) -> QVBoxLayout:
        box = QVBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_label = QLabel(wordWrap=True)
        self.facts_label = QLabel(wordWrap=True)
        self.facts_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for widget in (self.facts_label, self.progress_bar, self.progress_label):
            box.addWidget(widget)
        return box

    def _build_log(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        self.log_filter = QLineEdit(placeholderText="Search the log", clearButtonEnabled=True)
        self.log_filter.textChanged.connect(self.on_log_filter_text_changed)
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText(
            "No log lines yet: the trainer's messages appear here as it runs."
        )
        layout.addWidget(self.log_filter)
        layout.addWidget(self.log_view, 1)
        return pane

    def _build_artifacts(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.artifacts_label = QLabel(wordWrap=True)
        self.artifacts_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setToolTip("Open the job's folder: spec, log, checkpoints, results")
        self.open_folder_button.clicked.connect(self.on_open_folder_button_clicked)
        row.addWidget(self.artifacts_label, 1)
        row.addWidget(self.open_folder_button)
        return row

    # --- what is shown -----------------------------------------------------------------------

    @property
    def shown_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def loading(self) -> bool:
        return self._loading

    def show_jobs(self, rows: list[JobRow], *, force: bool = False) -> None:
        """Show one job in full, several for comparison, or none."""
        ids = [row.id for row in rows]
        if ids == self._ids and not force:
            return
        self._ids, self.job = ids, None
        self._generation += 1
        self._pending.clear()
        self._log.clear()
        self.log_view.clear()
        self._set_actions(None)
        if not rows:
            self._show_nothing()
        elif len(rows) == 1:
            self._load_one(rows[0])
        else:
            self._load_several(rows)

    def _show_nothing(self) -> None:
        self._loading = False
        self.title_label.setText(f"<p>{SELECT_TEXT}</p>")
        for label in (self.status_label, self.facts_label, self.progress_label):
            label.clear()
        self.error_label.clear()
        self.artifacts_label.clear()
        self.progress_bar.hide()
        self.open_folder_button.setEnabled(False)
        self.chart.show_message("Select a job to see its loss curves.")

    def _load_one(self, row: JobRow) -> None:
        self.title_label.setText(f"<h3>{html.escape(row.name)}</h3>")
        self.show_figures(row)
        self._loading = True
        self.chart.show_message("Reading the loss curves…")
        database, folder = self._context.database, job_dir(self._context.home, row.id)

        def work(_context: object) -> _Loaded:
            curves = load_curves(database, [row.id])[row.id]
            return _Loaded(get_job(database, row.id), curves, read_log(folder / EVENTS_FILE))

        generation = self._generation
        submit_for(
            self,
            self._runner,
            work,
            on_success=lambda loaded: self._on_loaded(generation, loaded),
            on_error=lambda failure: self._on_load_failed(generation, failure),
        )

    def _on_loaded(self, generation: int, loaded: _Loaded) -> None:
        if generation != self._generation:
            return  # another job was selected meanwhile
        self._loading = False
        self.show_job(loaded.job)
        self.chart.set_series([(loaded.job.id, loaded.job.name, loaded.curves)])
        self._set_log(loaded.log)
        self._replay_pending(loaded.curves, loaded.log[-1].time if loaded.log else 0.0)

    def _on_load_failed(self, generation: int, failure: TaskFailure) -> None:
        if generation == self._generation:
            self._loading = False
            self.chart.show_message(failure.message)

    def _replay_pending(self, curves: Curves, last_log_time: float) -> None:
        """Live events that came while loading and are newer than what was read."""
        pending, self._pending = self._pending, []
        last_train = curves.steps[-1] if curves.steps else -1
        last_eval = curves.eval_steps[-1] if curves.eval_steps else -1
        for event in pending:
            if isinstance(event, ProgressEvent | EvalEvent):
                last = last_train if isinstance(event, ProgressEvent) else last_eval
                if event.step > last:
                    self._chart_event(self._ids[0], event)
            elif (line := log_line(event)) is not None and line.time > last_log_time:
                self._append_log(line)

    def _load_several(self, rows: list[JobRow]) -> None:
        names = ", ".join(row.name for row in rows[:4]) + ("…" if len(rows) > 4 else "")
        self.title_label.setText(
            f"<h3>{len(rows)} jobs compared</h3><p>{html.escape(names)}: training loss solid, "
            "evaluation loss dashed.</p>"
        )
        for label in (self.status_label, self.facts_label, self.progress_label):
            label.clear()
        self.error_label.clear()
        self.artifacts_label.clear()
        self.progress_bar.hide()
        self.open_folder_button.setEnabled(False)
        self._loading = True
        self.chart.show_message("Reading the loss curves…")
        database, generation = self._context.database, self._generation
        ids = [row.id for row in rows]
        submit_for(
            self,
            self._runner,
            lambda _c: load_curves(database, ids),
            on_success=lambda curves: self._on_several_loaded(generation, rows, curves),
            on_error=lambda failure: self._on_load_failed(generation, failure),
        )

    def _on_several_loaded(
        self, generation: int, rows: list[JobRow], curves: dict[str, Curves]
    ) -> None:
        if generation != self._generation:
            return
        self._loading = False
        self.chart.set_series([(row.id, row.name, curves[row.id]) for row in rows])
        self._pending.clear()  # the comparison shows what was recorded; new points follow live

    def refresh_job(self) -> None:
        """Read the shown job again (its status, error or artifacts changed)."""
        if len(self._ids) != 1:
            return
        database, job_id, generation = self._context.database, self._ids[0], self._generation
        submit_for(
            self,
            self._runner,
            lambda _c: get_job(database, job_id),
            on_success=lambda job: self.show_job(job) if generation == self._generation else None,
        )

    def show_job(self, job: Job) -> None:
        """The static part: title, status, facts, error, artifacts, and which actions apply."""
        self.job = job
        self.title_label.setText(f"<h3>{html.escape(job.name)}</h3>")
        colour = STATUS_COLOURS.get(JobStatus(job.status), "#6b7280")
        self.status_label.setText(job.status)
        self.status_label.setStyleSheet(
            f"background: {colour}; color: white; border-radius: 8px; padding: 2px 10px;"
        )
        self.facts_label.setText(_facts(job))
        palette = self.progress_bar.palette()
        palette.setColor(QPalette.ColorRole.Highlight, QColor(colour))
        self.progress_bar.setPalette(palette)
        self.error_label.setText(job.error or "")
        self.artifacts_label.setText(_artifacts_text(job))
        self.open_folder_button.setEnabled(True)
        if job.status != JobStatus.RUNNING:
            self._cancelling.discard(job.id)
        self._set_actions(job)
        if job.id in self._cancelling:
            self.cancel_button.setEnabled(False)

    def _set_actions(self, job: Job | None) -> None:
        status = JobStatus(job.status) if job else None
        self.cancel_button.setEnabled(status in ACTIVE)
        self.resume_button.setEnabled(status in RESUMABLE)
        self.retry_button.setEnabled(status in RETRYABLE)
        self.queue_button.setEnabled(status == JobStatus.QUEUED)
        self.publish_button.setEnabled(status == JobStatus.COMPLETED)
        self.evaluate_button.setEnabled(status == JobStatus.COMPLETED)
        self.duplicate_button.setEnabled(job is not None)
        self.delete_button.setEnabled(job is not None and status != JobStatus.RUNNING)

    def show_figures(self, row: JobRow) -> None:
        """The live part: progress, loss, tokens per second, ETA."""
        fraction = row.progress
        self.progress_bar.setVisible(fraction is not None)
        self.progress_bar.setValue(round((fraction or 0) * 1000))
        cancelling = row.id in self._cancelling and row.status == JobStatus.RUNNING
        prefix = "Cancelling: it stops once it has saved a checkpoint. " if cancelling else ""
        self.progress_label.setText(prefix + _figures(row))

    def mark_cancelling(self, row: JobRow | None) -> None:
        if self.job is not None:
            self._cancelling.add(self.job.id)
        self.cancel_button.setEnabled(False)
        if row is not None:
            self.show_figures(row)

    # --- live events -------------------------------------------------------------------------

    def apply_event(self, job_id: str, event: Event, row: JobRow | None) -> None:
        """A trainer event for `job_id` (`row` has already taken it in)."""
        if job_id not in self._ids:
            return
        single = len(self._ids) == 1
        if self._loading:
            self._pending.append(event)
        elif isinstance(event, ProgressEvent | EvalEvent):
            self._chart_event(job_id, event)
        elif single and (line := log_line(event)) is not None:
            self._append_log(line)
        if row is not None and single:
            self.show_figures(row)

    def _chart_event(self, job_id: str, event: ProgressEvent | EvalEvent) -> None:
        if isinstance(event, ProgressEvent):
            self.chart.append(job_id, event.step, loss=event.loss)
        else:
            self.chart.append(job_id, event.step, eval_loss=event.eval_loss)

    # --- the log -----------------------------------------------------------------------------

    def _set_log(self, lines: list[LogLine]) -> None:
        self._log.clear()
        self._log.extend(lines)
        self._render_log()

    def _append_log(self, line: LogLine) -> None:
        self._log.append(line)
        if self._matches(line):
            bar = self.log_view.verticalScrollBar()
            following = bar.value() >= bar.maximum() - 2
            self.log_view.appendPlainText(line.render())
            if following:
                bar.setValue(bar.maximum())

    def _render_log(self) -> None:
        text = "\n".join(line.render() for line in self._log if self._matches(line))
        self.log_view.setPlainText(text)
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _matches(self, line: LogLine) -> bool:
        needle = self.log_filter.text().strip().casefold()
        return not needle or needle in line.message.casefold() or needle == line.level

    def on_log_filter_text_changed(self, _text: str) -> None:
        self._render_log()

    @property
    def log_text(self) -> str:
        return self.log_view.toPlainText()

    def on_open_folder_button_clicked(self) -> None:
        if len(self._ids) == 1:
            folder = job_dir(self._context.home, self._ids[0])
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


# --- text ----------------------------------------------------------------------------------------


def _facts(job: Job) -> str:
    hyper = job.spec.get("hyperparameters", {})
    parts = [
        f"Dataset <b>{html.escape(job.dataset_name)}</b>",
        f"base model <b>{html.escape(job.base_model)}</b>",
        _where(job),
        f"{job.method}, {hyper.get('epochs', '?')} epochs, batch {hyper.get('batch_size', '?')}, "
        f"learning rate {hyper.get('learning_rate', '?')}",
        f"created {format_time(job.created_at)}",
    ]
    if job.attempt > 1:
        parts.append(f"attempt {job.attempt}")
    return "; ".join(parts) + f". <span style='color: gray'>id {job.id}</span>"


def _where(job: Job) -> str:
    """Where the job runs: this machine, or the cluster its spec names."""
    target = target_of(job.spec)
    if target is not None:
        return f"runs on cluster <b>{html.escape(target)}</b>"
    return "runs on <b>this machine</b>"


def _figures(row: JobRow) -> str:
    if row.status == JobStatus.QUEUED:
        return "Queued: it starts when a worker is free (see the Dashboard)."
    parts = []
    if row.total_steps:
        parts.append(f"Step {row.step:,} of {row.total_steps:,}")
    if row.loss is not None:
        parts.append(f"loss {format_loss(row.loss)}")
    if row.eval_loss is not None:
        parts.append(f"evaluation loss {format_loss(row.eval_loss)}")
    if row.tokens_per_second is not None:
        parts.append(f"{row.tokens_per_second:,.0f} tokens/s")
    if row.status == JobStatus.RUNNING and row.eta_seconds is not None:
        parts.append(f"about {format_duration(row.eta_seconds)} left")
    duration = format_duration(row.duration_seconds())
    if duration:
        parts.append(f"{'running for' if row.status == JobStatus.RUNNING else 'took'} {duration}")
    return " · ".join(parts) if parts else "Starting: loading the model and the data…"


def _artifacts_text(job: Job) -> str:
    if not job.artifacts:
        return "No results yet: the adapter or model is written when the job completes."
    names = {"adapter": "LoRA adapter", "merged": "merged model", "checkpoint": "last checkpoint"}
    items = [f"{names.get(kind, kind)}: {path}" for kind, path in sorted(job.artifacts.items())]
    return "Results in the job's folder: " + "; ".join(items)
