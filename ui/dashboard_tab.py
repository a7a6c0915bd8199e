"""The Dashboard tab: what is in the data folder now, what is training, and what to do next.

Everything shown is read from the database, the worker pool or the disk; nothing is estimated.
The jobs and the disk usage are read on the background runner; running jobs' progress follows
the pool's events live.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.datasets.repository import list_datasets
from app.db.session import Database
from app.events import Event, ProgressEvent, StartedEvent
from app.jobs.lifecycle import JobStatus
from app.workers.background import TaskFailure, TaskRunner
from app.workers.pool import WorkerPool
from ui.job_models import (
    STATUS_COLOURS,
    JobRow,
    count_jobs_by_status,
    format_duration,
    format_loss,
    format_time,
    load_recent_rows,
    load_running_rows,
    submit_for,
)


@dataclass(frozen=True)
class JobsSnapshot:
    """The jobs part of the dashboard, read in one background task."""

    counts: dict[str, int]
    running: list[JobRow]
    recent: list[JobRow]


def read_jobs_snapshot(database: Database) -> JobsSnapshot:
    return JobsSnapshot(
        count_jobs_by_status(database), load_running_rows(database), load_recent_rows(database)
    )


@dataclass(frozen=True)
class DiskUsage:
    total: int
    by_folder: dict[str, int]  # top-level entries of the data folder, largest first

    def by_part(self) -> dict[str, int]:
        """The folders by what they hold, the database's files together, largest first."""
        parts: dict[str, int] = {}
        for name, size in self.by_folder.items():
            part = _PARTS.get(name, "database" if name.startswith("mtm.sqlite3") else "other")
            parts[part] = parts.get(part, 0) + size
        return dict(sorted(parts.items(), key=lambda item: -item[1]))


_PARTS = {
    "datasets": "datasets",
    "jobs": "jobs",
    "models": "converted models",
    "logs": "logs",
    "backups": "backups",
}


def format_bytes(count: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count:,} bytes"


def disk_usage(root: Path) -> DiskUsage:
    """Bytes used under `root`, by its top-level entries (links are not followed)."""
    sizes: dict[str, int] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            sizes[entry.name] = _entry_size(entry)
    ordered = dict(sorted(sizes.items(), key=lambda item: -item[1]))
    return DiskUsage(sum(sizes.values()), ordered)


def _entry_size(entry: os.DirEntry[str]) -> int:
    try:
        if entry.is_dir(follow_symlinks=False):
            with os.scandir(entry.path) as children:
                return sum(_entry_size(child) for child in children)
        return entry.stat(follow_symlinks=False).st_size
    except OSError:  # removed while we looked, or unreadable
        return 0


class _RunningRow(QWidget):
    """One running job: its name, a progress bar and its figures."""

    def __init__(self, job: JobRow, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job = job
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.name_label = QLabel(job.name)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.figures_label = QLabel()
        layout.addWidget(self.name_label, 2)
        layout.addWidget(self.bar, 3)
        layout.addWidget(self.figures_label, 3)
        self.show_job()

    def apply(self, event: Event) -> None:
        if isinstance(event, StartedEvent):
            self.job.total_steps, self.job.step = event.total_steps, event.resume_step
        elif isinstance(event, ProgressEvent):
            self.job.step, self.job.total_steps = event.step, event.total_steps
            self.job.loss, self.job.eta_seconds = event.loss, event.eta_seconds
        else:
            return
        self.show_job()

    def show_job(self) -> None:
        job = self.job
        self.bar.setValue(round((job.progress or 0) * 1000))
        if not job.total_steps:
            self.figures_label.setText("starting: loading the model and the data…")
            return
        parts = [f"step {job.step:,} of {job.total_steps:,}"]
        if job.loss is not None:
            parts.append(f"loss {format_loss(job.loss)}")
        if job.eta_seconds is not None:
            parts.append(f"about {format_duration(job.eta_seconds)} left")
        self.figures_label.setText(" · ".join(parts))


class DashboardTab(QWidget):
    """Datasets, jobs by status, the running jobs, the workers (pause and resume), recent
    activity and the disk the data folder uses."""

    def __init__(
        self,
        context: AppContext,
        runner: TaskRunner,
        pool: WorkerPool,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._pool = pool
        self._reading = False
        self._read_again = False
        self._running_rows: dict[str, _RunningRow] = {}
        self._names: dict[str, str] = {}
        self._build()
        pool.state_changed.connect(self.on_pool_state_changed)
        pool.idle.connect(self.refresh_jobs)  # after start-up marked crashed jobs interrupted
        pool.job_event.connect(self.on_pool_job_event)
        self.refresh()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.summary_label = _rich_label()
        layout.addWidget(self.summary_label)
        grid = QGridLayout()
        grid.addWidget(self._group("Jobs", self._build_jobs()), 0, 0)
        grid.addWidget(self._group("Workers", self._build_workers()), 0, 1)
        grid.addWidget(self._group("Running now", self._build_running()), 1, 0, 1, 2)
        grid.addWidget(self._group("Recent activity", self._build_recent()), 2, 0)
        grid.addWidget(self._group("Disk", self._build_disk()), 2, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        layout.addStretch(1)

    @staticmethod
    def _group(title: str, content: QWidget) -> QGroupBox:
        group = QGroupBox(title)
        box = QVBoxLayout(group)
        box.addWidget(content)
        return group

    def _build_jobs(self) -> QWidget:
        self.jobs_label = _rich_label("Reading the jobs…")
        return self.jobs_label

    def _build_workers(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        self.workers_label = _rich_label()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Start no new job; the running ones go on")
        self.pause_button.clicked.connect(self.on_pause_button_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Start queued jobs again as workers free up")
        self.resume_button.clicked.connect(self.on_resume_button_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.resume_button)
        buttons.addStretch(1)
        layout.addWidget(self.workers_label)
        layout.addLayout(buttons)
        return pane

    def _build_running(self) -> QWidget:
        pane = QWidget()
        self._running_layout = QVBoxLayout(pane)
        self._running_layout.setContentsMargins(0, 0, 0, 0)
        self.running_empty_label = QLabel("Nothing is training now.")
        self._running_layout.addWidget(self.running_empty_label)
        return pane

    def _build_recent(self) -> QWidget:
        self.recent_label = _rich_label("Reading the jobs…")
        return self.recent_label

    def _build_disk(self) -> QWidget:
        self.disk_label = _rich_label("Measuring the data folder…")
        return self.disk_label

    # --- refreshing --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Everything again: the datasets line now, the jobs and the disk in the background."""
        self._show_summary()
        self.refresh_jobs()
        self.refresh_disk()

    def _show_summary(self) -> None:
        # A small indexed query; SQLite in WAL never blocks a reader.
        datasets = list_datasets(self._context.database)
        records = sum(d.rows for d in datasets)
        if datasets:
            newest = datasets[0]
            data_line = (
                f"<p><b>{len(datasets):,}</b> dataset{'' if len(datasets) == 1 else 's'} with "
                f"<b>{records:,}</b> records in all; "
                f"the newest is <i>{html.escape(newest.name)}</i> ({newest.rows:,} {newest.format} "
                "records).</p>"
            )
        else:
            data_line = (
                "<p>No datasets yet. Press <b>Ctrl+O</b> or drop a JSON, JSON Lines, CSV, "
                "Parquet or text file on the window to import one.</p>"
            )
        self.summary_label.setText(f"<h2>Model Training Manager</h2>{data_line}")

    def refresh_jobs(self) -> None:
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        database = self._context.database
        submit_for(
            self,
            self._runner,
            lambda _c: read_jobs_snapshot(database),
            on_success=self.on_jobs_read,
            on_error=self.on_jobs_read_failed,
        )

    def on_jobs_read(self, snapshot: JobsSnapshot) -> None:
        self._reading = False
        self._names.update({job.id: job.name for job in snapshot.running + snapshot.recent})
        self.jobs_label.setText(_counts_html(snapshot.counts))
        self._show_running(snapshot.running)
        self.recent_label.setText(_recent_html(snapshot.recent))
        self._show_workers()
        if self._read_again:
            self._read_again = False
            self.refresh_jobs()

    def on_jobs_read_failed(self, failure: TaskFailure) -> None:
        self._reading = False
        self.jobs_label.setText(html.escape(failure.message))

    def refresh_disk(self) -> None:
        root = self._context.home.root
        submit_for(
            self,
            self._runner,
            lambda _c: disk_usage(root),
            on_success=self.on_disk_measured,
            on_error=lambda failure: self.disk_label.setText(html.escape(failure.message)),
        )

    def on_disk_measured(self, usage: DiskUsage) -> None:
        parts = [f"{name} {format_bytes(size)}" for name, size in usage.by_part().items() if size]
        self.disk_label.setText(
            f"The data folder uses <b>{format_bytes(usage.total)}</b>"
            + (f": {html.escape(', '.join(parts))}." if parts else ".")
            + f"<br><code>{html.escape(str(self._context.home.root))}</code>"
        )

    # --- the pool ----------------------------------------------------------------------------

    def on_pool_state_changed(self) -> None:
        self._show_workers()
        self.refresh_jobs()

    def on_pool_job_event(self, job_id: str, event: Event) -> None:
        row = self._running_rows.get(job_id)
        if row is not None:
            row.apply(event)

    def on_pause_button_clicked(self) -> None:
        self._pool.pause()

    def on_resume_button_clicked(self) -> None:
        self._pool.resume()

    def _show_workers(self) -> None:
        paused = self._pool.paused
        self.pause_button.setEnabled(not paused)
        self.resume_button.setEnabled(paused)
        lines = []
        for worker in self._pool.workers():
            doing = "idle"
            if worker.job_id is not None:
                doing = (
                    f"training <i>{html.escape(self._names.get(worker.job_id, worker.job_id))}</i>"
                )
            lines.append(f"Worker {worker.slot + 1}: {doing}")
        busy = len(self._pool.running_jobs)
        head = f"<b>{busy}</b> busy, <b>{len(lines) - busy}</b> idle"
        note = "<br><b>Paused:</b> no new job starts; the running ones go on." if paused else ""
        self.workers_label.setText(f"{head}<br>{'<br>'.join(lines)}{note}")

    def _show_running(self, running: list[JobRow]) -> None:
        for job_id in list(self._running_rows):
            if job_id not in {job.id for job in running}:
                self._running_rows.pop(job_id).deleteLater()
        for job in running:
            if job.id not in self._running_rows:
                row = _RunningRow(job)
                self._running_rows[job.id] = row
                self._running_layout.addWidget(row)
        self.running_empty_label.setVisible(not running)

    @property
    def running_job_ids(self) -> list[str]:
        return list(self._running_rows)

    def running_progress(self, job_id: str) -> int | None:
        row = self._running_rows.get(job_id)
        return row.bar.value() if row else None


def _counts_html(counts: dict[str, int]) -> str:
    if not counts:
        return "No training jobs yet: press <b>New job…</b> in the Jobs tab to start one."
    parts = []
    for status in JobStatus:
        if counts.get(status):
            colour = STATUS_COLOURS[status]
            parts.append(f"<span style='color: {colour}'><b>{counts[status]:,}</b> {status}</span>")
    total = sum(counts.values())
    return f"<b>{total:,}</b> job{'' if total == 1 else 's'}: " + " · ".join(parts)


def _recent_html(recent: list[JobRow]) -> str:
    if not recent:
        return "Nothing yet: jobs appear here as they are queued, start and finish."
    return "<br>".join(_activity(job) for job in recent)


def _activity(job: JobRow) -> str:
    moment = job.finished_at or job.started_at or job.created_at
    verb = {
        JobStatus.QUEUED: "queued",
        JobStatus.RUNNING: "started",
    }.get(JobStatus(job.status), job.status)
    detail = ""
    if job.status == JobStatus.COMPLETED and job.loss is not None:
        detail = f" (loss {format_loss(job.loss)})"
    elif job.status == JobStatus.FAILED and job.error:
        detail = f": {html.escape(job.error)}"
    colour = STATUS_COLOURS.get(JobStatus(job.status), "#6b7280")
    return (
        f"{format_time(moment)} &nbsp;<i>{html.escape(job.name)}</i> "
        f"<span style='color: {colour}'>{verb}</span>{detail}"
    )


def _rich_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label
