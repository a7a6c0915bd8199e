"""The Jobs tab: every training job in a filterable table, and a detail pane for the selected one
(ui.job_detail: live loss chart, progress, log, artifacts, and the actions cancel, resume, retry,
duplicate and delete, which this tab carries out). Select several jobs to compare their curves.

Live figures come from the worker pool's `job_event` signal and update rows in memory; the table
is read again from the database (off the GUI thread) when a job starts, ends or changes status.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.db.models import Job
from app.events import Event
from app.executors.remote_jobs import cancel_where_it_runs
from app.jobs.lifecycle import JobStatus
from app.jobs.service import (
    QueueMove,
    delete_job,
    move_job,
    resume_job,
    retry_job,
    target_of,
)
from app.workers.background import TaskFailure, TaskRunner
from app.workers.pool import WorkerPool
from ui.dialogs import confirm, show_error
from ui.job_detail import JobDetailPane
from ui.job_models import (
    JobFilterProxy,
    JobRow,
    JobTableModel,
    ProgressBarDelegate,
    StatusBadgeDelegate,
    load_job_rows,
    submit_for,
)
from ui.new_job_dialog import JobDraft, NewJobDialog
from ui.ollama_connection import OllamaConnection

_FLUSH_MS = 250  # table repaints while jobs stream progress: four a second at most
_CLOCK_MS = 1000
_SEARCH_DELAY_MS = 150
# The chart's library takes half a second to import, on the GUI thread (see ui.loss_chart): do
# it once the tab has been on screen a moment, rather than on the first click on a job.
_PREPARE_CHART_MS = 1000
_COLUMN_WIDTHS = (200, 120, 140, 55, 100, 130, 65, 75, 75, 115, 80)
NO_JOBS_TEXT = (
    "No training jobs yet. Press New job… to fine-tune a base model on one of your datasets; "
    "import a dataset in the Datasets tab first if there is none."
)


class JobsTab(QWidget):
    """Signals: `jobs_changed()` after a job is created, deleted or changes status;
    `status_message(str)` for the status bar."""

    jobs_changed = Signal()
    status_message = Signal(str)
    models_changed = Signal()  # a job was published: Ollama has a new model
    compare_requested = Signal(str, str)  # (fine-tuned, base): open them in the playground

    def __init__(
        self,
        context: AppContext,
        runner: TaskRunner,
        pool: WorkerPool,
        parent: QWidget | None = None,
        ollama: OllamaConnection | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._pool = pool
        self._ollama = ollama
        self.ollama_dialog: QDialog | None = None  # the open Publish or Evaluate dialog
        self._reloading = False
        self._reload_again = False
        self._select_after_reload: str | None = None
        self.dialog: NewJobDialog | None = None
        self.loaded = False
        self.model = JobTableModel(self)
        self.proxy = JobFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self._make_timers()
        self._build()
        pool.job_event.connect(self.on_pool_job_event)
        pool.job_finished.connect(self.on_pool_job_finished)
        pool.state_changed.connect(self.reload)
        # The pool marks the jobs of a crashed process interrupted when it starts, and then,
        # with nothing left to run, says it is idle: read the jobs again then too.
        pool.idle.connect(self.reload)
        self.reload()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self.detail.chart.prepared:
            self._prepare_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._prepare_timer.stop()

    def on_prepare_timer_timeout(self) -> None:
        self.detail.chart.prepare()

    def _make_timers(self) -> None:
        self._flush_timer = QTimer(self, singleShot=True, interval=_FLUSH_MS)
        self._flush_timer.timeout.connect(self.model.flush)
        self._clock = QTimer(self, interval=_CLOCK_MS)
        self._clock.timeout.connect(self.model.tick)
        self._prepare_timer = QTimer(self, singleShot=True, interval=_PREPARE_CHART_MS)
        self._prepare_timer.timeout.connect(self.on_prepare_timer_timeout)
        self._search_timer = QTimer(self, singleShot=True, interval=_SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(
            lambda: self._apply_filter(lambda: self.proxy.set_search(self.search_edit.text()))
        )

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_toolbar())
        self.detail = JobDetailPane(self._context, self._runner)
        self._connect_actions()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self._build_table())
        splitter.addWidget(self.detail)
        splitter.setSizes([300, 420])
        layout.addWidget(splitter, 1)

    def _build_toolbar(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.new_button = QPushButton("New job…")
        self.new_button.setToolTip("Fine-tune a base model on one of your datasets")
        self.new_button.clicked.connect(self.on_new_button_clicked)
        self.status_combo = QComboBox()
        self.status_combo.addItem("All statuses", None)
        for status in JobStatus:
            self.status_combo.addItem(status.value.capitalize(), status.value)
        self.status_combo.setToolTip("Show only the jobs in one status")
        self.status_combo.currentIndexChanged.connect(self.on_status_combo_changed)
        self.search_edit = QLineEdit(placeholderText="Search by name", clearButtonEnabled=True)
        self.search_edit.textChanged.connect(lambda _t: self._search_timer.start())
        self.count_label = QLabel()
        row.addWidget(self.new_button)
        row.addWidget(self.status_combo)
        row.addWidget(self.search_edit, 1)
        row.addWidget(self.count_label)
        return row

    def _build_table(self) -> QStackedWidget:
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        rows = self.table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.table.setItemDelegateForColumn(JobTableModel.STATUS_COLUMN, StatusBadgeDelegate(self))
        self.table.setItemDelegateForColumn(
            JobTableModel.PROGRESS_COLUMN, ProgressBarDelegate(self)
        )
        header = self.table.horizontalHeader()
        for column, width in enumerate(_COLUMN_WIDTHS):  # fixed widths: 10,000 rows unmeasured
            header.resizeSection(column, width)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # newest first until clicked
        self.table.setSortingEnabled(True)
        self.table.selectionModel().selectionChanged.connect(self.on_table_selection_changed)
        self.empty_label = QLabel(NO_JOBS_TEXT, wordWrap=True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.table_stack = QStackedWidget()
        self.table_stack.addWidget(self.empty_label)
        self.table_stack.addWidget(self.table)
        return self.table_stack

    def _connect_actions(self) -> None:
        detail = self.detail
        detail.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        detail.resume_button.clicked.connect(self.on_resume_button_clicked)
        detail.retry_button.clicked.connect(self.on_retry_button_clicked)
        detail.duplicate_button.clicked.connect(self.on_duplicate_button_clicked)
        detail.delete_button.clicked.connect(self.on_delete_button_clicked)
        detail.publish_button.clicked.connect(self.on_publish_button_clicked)
        detail.evaluate_button.clicked.connect(self.on_evaluate_button_clicked)
        for move, action in detail.move_actions.items():
            action.triggered.connect(lambda _checked=False, move=move: self.move_selected(move))

    # --- reading the jobs --------------------------------------------------------------------

    def reload(self) -> None:
        """Read the jobs again, off the GUI thread; calls while one read runs make one more."""
        if self._reloading:
            self._reload_again = True
            return
        self._reloading = True
        database = self._context.database
        submit_for(
            self,
            self._runner,
            lambda _c: load_job_rows(database),
            on_success=self.on_reload_succeeded,
            on_error=self.on_reload_failed,
        )

    def on_reload_succeeded(self, rows: list[JobRow]) -> None:
        self._reloading = False
        selected = self._select_after_reload or None
        keep = [selected] if selected else self.selected_ids()
        self._select_after_reload = None
        self.model.set_rows(rows)
        self._restore_selection(keep)
        self._show_selected()  # a reset clears the selection without saying so
        self._after_rows_changed()
        self.loaded = True
        if self._reload_again:
            self._reload_again = False
            self.reload()

    def on_reload_failed(self, failure: TaskFailure) -> None:
        self._reloading = False
        self.status_message.emit(f"The jobs could not be read: {failure.message}")

    def _after_rows_changed(self) -> None:
        self.table_stack.setCurrentWidget(self.table if self.model.rowCount() else self.empty_label)
        self._update_counts()
        if self.model.running_rows():
            self._clock.start()
        else:
            self._clock.stop()
        shown = self.detail.shown_ids
        row = self.model.job(shown[0]) if len(shown) == 1 else None
        if row is not None and self.detail.job is not None and self.detail.job.status != row.status:
            self.detail.refresh_job()
        if row is not None:
            self.detail.show_figures(row)

    def _update_counts(self) -> None:
        counts: dict[str, int] = {}
        for row in self.model.rows():
            counts[row.status] = counts.get(row.status, 0) + 1
        for index in range(1, self.status_combo.count()):
            status = self.status_combo.itemData(index)
            label = f"{str(status).capitalize()} ({counts.get(status, 0):,})"
            self.status_combo.setItemText(index, label)
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        text = _jobs(total) if shown == total else f"{shown:,} of {_jobs(total)} shown"
        self.count_label.setText(text if total else "")
        if total and not shown:
            self.count_label.setText(f"No job of {total:,} matches")

    def job_name(self, job_id: str) -> str:
        row = self.model.job(job_id)
        return row.name if row else job_id

    # --- selection ---------------------------------------------------------------------------

    def selected_ids(self) -> list[str]:
        rows = self.table.selectionModel().selectedRows()
        ids = [self.proxy.mapToSource(index).row() for index in rows]
        return [job.id for row in sorted(ids) if (job := self.model.job_at(row))]

    def select_job(self, job_id: str) -> None:
        self._restore_selection([job_id])

    def _restore_selection(self, ids: list[str]) -> None:
        if ids == self.selected_ids():
            return
        selection = QItemSelection()
        for job_id in ids:
            index = self.proxy.mapFromSource(self.model.index(self.model.row_of(job_id), 0))
            if index.isValid():
                selection.select(index, index)
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.table.selectionModel().select(selection, flags)
        if not selection.isEmpty():
            self.table.scrollTo(selection.indexes()[0])

    def on_table_selection_changed(self, _new: QItemSelection, _old: QItemSelection) -> None:
        self._show_selected()

    def _show_selected(self, *, again: bool = False) -> None:
        rows = [row for job_id in self.selected_ids() if (row := self.model.job(job_id))]
        self.detail.show_jobs(rows, force=again)

    def on_status_combo_changed(self, _index: int) -> None:
        status = self.status_combo.currentData()
        self._apply_filter(lambda: self.proxy.set_status(status))

    def _apply_filter(self, change: Callable[[], None]) -> None:
        change()
        self._update_counts()

    # --- live events -------------------------------------------------------------------------

    def on_pool_job_event(self, job_id: str, event: Event) -> None:
        if not self.model.apply_event(job_id, event):
            self.reload()  # a job this table has not read yet (queued from the command line)
            return
        if self.model.has_dirty_rows and not self._flush_timer.isActive():
            self._flush_timer.start()
        self.detail.apply_event(job_id, event, self.model.job(job_id))

    def on_pool_job_finished(self, job_id: str, _status: str) -> None:
        if job_id in self.detail.shown_ids:
            self.detail.refresh_job()
        self.jobs_changed.emit()

    # --- actions -----------------------------------------------------------------------------

    def on_new_button_clicked(self) -> None:
        self.open_new_job_dialog(None)

    def open_new_job_dialog(self, draft: JobDraft | None) -> NewJobDialog:
        recent = self.model.recent_base_models()
        dialog = NewJobDialog(self._context, self._runner, recent, draft, self)
        dialog.job_created.connect(self.on_dialog_job_created)
        self.dialog = dialog
        dialog.open()
        return dialog

    def on_dialog_job_created(self, job: Job) -> None:
        self.status_message.emit(f"Queued {job.name}.")
        self._select_after_reload = job.id
        self.reload()
        self._pool.dispatch()
        self.jobs_changed.emit()

    def on_cancel_button_clicked(self) -> None:
        job = self.detail.job
        if job is None:
            return
        if job.id in self._pool.running_jobs:
            self._pool.cancel(job.id)  # SIGTERM: the trainer checkpoints, then stops
            self.detail.mark_cancelling(self.model.job(job.id))
            self.status_message.emit(f"Cancelling {job.name}…")
            return
        # Queued, or running on a cluster and followed by another process (a second window,
        # `mtm worker run`): the head is asked to stop it, and that process records the end.
        database, job_id = self._context.database, job.id
        target = target_of(job.spec)
        if job.status == JobStatus.QUEUED:
            done = f"Cancelled {job.name}."
        else:
            where = f"the cluster {target}" if target else "its trainer"
            done = f"Asked {where} to stop {job.name}; it saves a checkpoint first."
        self._run_action(lambda: cancel_where_it_runs(database, job_id), done)

    def on_resume_button_clicked(self) -> None:
        job = self.detail.job
        if job is not None:
            database, home, job_id = self._context.database, self._context.home, job.id
            done = f"Queued {job.name} again; it continues from its last checkpoint."
            self._run_action(lambda: resume_job(database, home, job_id), done, dispatch=True)

    def on_retry_button_clicked(self) -> None:
        job = self.detail.job
        if job is not None:
            database, home, job_id = self._context.database, self._context.home, job.id
            done = f"Queued {job.name} again from the start."
            self._run_action(
                lambda: retry_job(database, home, job_id), done, dispatch=True, fresh=True
            )

    def on_publish_button_clicked(self) -> None:
        job = self.detail.job
        if job is None or self._ollama is None:
            return
        from ui.publish_dialog import PublishDialog

        dialog = PublishDialog(self._context, self._ollama, job.id, job.name, self)
        dialog.published.connect(
            lambda result: self.status_message.emit(f"Published {result.name}.")
        )
        dialog.published.connect(lambda _result: self.models_changed.emit())
        dialog.compare_requested.connect(self.compare_requested)
        self.ollama_dialog = dialog
        dialog.open()

    def on_evaluate_button_clicked(self) -> None:
        job = self.detail.job
        if job is None or self._ollama is None:
            return
        from ui.evaluate_dialog import EvaluateDialog

        dialog = EvaluateDialog(self._context, self._runner, self._ollama, job.id, self)
        self.ollama_dialog = dialog
        dialog.open()

    def move_selected(self, move: str) -> None:
        """Move the shown queued job in the queue; the dispatcher follows the new order."""
        job = self.detail.job
        if job is not None:
            database, home, job_id = self._context.database, self._context.home, job.id
            done = f"Moved {job.name} in the queue."
            self._run_action(lambda: move_job(database, home, job_id, QueueMove(move)), done)

    def on_duplicate_button_clicked(self) -> None:
        if self.detail.job is not None:
            self.open_new_job_dialog(JobDraft.from_job(self.detail.job))

    def on_delete_button_clicked(self) -> None:
        job = self.detail.job
        if job is None:
            return
        text = (
            f"Delete the job {job.name!r} with its checkpoints, log and results? This cannot be "
            "undone."
        )
        database, home, job_id = self._context.database, self._context.home, job.id
        self._confirm_box = confirm(
            self,
            "Delete job",
            text,
            lambda: self._run_action(lambda: delete_job(database, home, job_id), "Deleted."),
        )

    def _run_action(
        self, work: Callable[[], object], done: str, dispatch: bool = False, fresh: bool = False
    ) -> None:
        """A write (it may wait on SQLite's lock or remove files), off the GUI thread; `fresh`
        when it removed the job's results, so the detail pane reads everything again."""
        for button in self.detail.action_buttons:
            button.setEnabled(False)

        def on_success(_result: object) -> None:
            self.reload()
            if fresh:
                self._show_selected(again=True)
            else:
                self.detail.refresh_job()
            self.jobs_changed.emit()
            self.status_message.emit(done)
            if dispatch:
                self._pool.dispatch()

        def on_error(failure: TaskFailure) -> None:
            self.detail.refresh_job()
            show_error(self, failure.message)

        submit_for(self, self._runner, lambda _c: work(), on_success=on_success, on_error=on_error)


def _jobs(count: int) -> str:
    return f"{count:,} job" + ("" if count == 1 else "s")
