"""The Models tab: the models Ollama has, the details of the selected one (/api/show), the models
loaded in memory (/api/ps), and pulling, copying and deleting models.

Every Ollama call is an asyncio task of the tab's AsyncTasks (ui.async_tasks), so nothing blocks
the window; `shut_down()` cancels them all (a pull's stream is closed with its task), and the
callbacks of work that ends after the tab was deleted are skipped.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any, ParamSpec, TypeVar

from PySide6.QtCore import QItemSelection, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from app.ollama.client import OllamaClient
from app.ollama.types import (
    ModelInfo,
    ModelSummary,
    PullProgress,
    PullTotals,
    RunningModel,
    full_name,
)
from app.workers.background import TaskFailure
from ui.async_tasks import AsyncTasks
from ui.dialogs import ERROR_STYLE, confirm, show_error
from ui.ollama_connection import OllamaConnection, OllamaState
from ui.ollama_models import (
    LoadedModelTable,
    ModelFilterProxy,
    OllamaModelTable,
    format_size,
)

P = ParamSpec("P")
T = TypeVar("T")

# /api/ps is cheap, but loaded models change only when something chats or a keep_alive ends.
LOADED_REFRESH_MS = 10_000
_LICENSE_PREVIEW_CHARS = 70
NO_MODELS_TEXT = (
    "Ollama has no models yet. Pull one by name above (for example smollm2:135m), or publish a "
    "fine-tuned model from the Jobs tab."
)
SELECT_TEXT = "Select a model to see its details."
NOTHING_LOADED_TEXT = "No model is loaded in memory now; Ollama loads one when it is used."
PULL_HINT = "Type the name of a model to pull, for example smollm2:135m."
FACTS = (
    "Architecture",
    "Parameters",
    "Quantisation",
    "Context length",
    "Embedding length",
    "Family",
    "Parent model",
    "Capabilities",
    "License",
)


def _if_alive(owner: QObject, callback: Callable[P, None]) -> Callable[P, None]:
    """`callback`, skipped once `owner` has been deleted (an answer can outlive its widget)."""

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        if isValid(owner):
            callback(*args, **kwargs)

    return call


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()


def _text_box() -> QPlainTextEdit:
    box = QPlainTextEdit(readOnly=True)
    box.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
    box.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    return box


class ModelsTab(QWidget):
    """Signals: `models_changed()` after a pull, delete or copy succeeded;
    `status_message(str)` for the status bar."""

    models_changed = Signal()
    status_message = Signal(str)

    def __init__(self, connection: OllamaConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._connection = connection
        self._tasks = AsyncTasks(self)
        self._list_task: asyncio.Task[Any] | None = None
        self._loaded_task: asyncio.Task[Any] | None = None
        self._show_task: asyncio.Task[Any] | None = None
        self._pull_task: asyncio.Task[Any] | None = None
        self._pulling = ""
        self._changing = False  # a delete or copy is on its way
        self._shown: tuple[str, str] | None = None  # (name, digest) the details pane is for
        self._select_after_refresh: str | None = None
        self._list_error: str | None = None
        self._online = connection.state is not None and connection.state.connected
        self._shut_down = False
        self.loaded = False
        self.dialog: QDialog | None = None  # the confirm or copy dialog opened last
        self.model = OllamaModelTable(self)
        self.proxy = ModelFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.loaded_model = LoadedModelTable(self)
        self._loaded_timer = QTimer(self, interval=LOADED_REFRESH_MS)
        self._loaded_timer.timeout.connect(self.on_loaded_timer_timeout)
        self._build()
        connection.state_changed.connect(self.on_connection_state_changed)
        tasks = self._tasks
        # Deleting the tab must not leave tasks that call into it (a pull streaming into it).
        self.destroyed.connect(lambda _object=None: tasks.cancel_all())
        self._update_view()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_toolbar())
        layout.addLayout(self._build_pull_row())
        self.details = ModelDetailsPane()
        self.details.copy_button.clicked.connect(self.on_copy_button_clicked)
        self.details.delete_button.clicked.connect(self.on_delete_button_clicked)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_lists())
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([640, 520])
        layout.addWidget(splitter, 1)

    def _build_toolbar(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.filter_edit = QLineEdit(placeholderText="Filter by name or family")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.on_filter_edit_text_changed)
        self.count_label = QLabel()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the models and the loaded models from Ollama again")
        self.refresh_button.clicked.connect(self.refresh)
        self.pull_edit = QLineEdit(placeholderText="Model to pull, e.g. smollm2:135m")
        self.pull_edit.setToolTip("A name from the Ollama library: model[:tag]")
        self.pull_edit.returnPressed.connect(self.on_pull_button_clicked)
        self.pull_button = QPushButton("Pull")
        self.pull_button.setToolTip("Download the model from the Ollama registry")
        self.pull_button.clicked.connect(self.on_pull_button_clicked)
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.count_label)
        row.addWidget(self.refresh_button)
        row.addSpacing(24)
        row.addWidget(self.pull_edit, 1)
        row.addWidget(self.pull_button)
        return row

    def _build_pull_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.pull_label = QLabel(wordWrap=True)
        self.pull_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress_bar = QProgressBar()
        self.progress_bar.setMinimumWidth(260)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the pull; Ollama resumes it if it is pulled again")
        self.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        row.addWidget(self.pull_label, 1)
        row.addWidget(self.progress_bar)
        row.addWidget(self.cancel_button)
        for widget in (self.pull_label, self.progress_bar, self.cancel_button):
            widget.hide()
        return row

    def _build_lists(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        self.list_notice = QLabel(wordWrap=True)
        self.list_notice.setStyleSheet(ERROR_STYLE)
        self.list_notice.hide()
        layout.addWidget(self.list_notice)
        layout.addWidget(self._build_table(), 1)
        self.loaded_title = QLabel("<b>Loaded in memory</b>")
        layout.addWidget(self.loaded_title)
        layout.addWidget(self._build_loaded_table())
        return pane

    def _build_table(self) -> QStackedWidget:
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        rows = self.table.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(OllamaModelTable.NAME, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # Ollama's order: newest first
        self.table.setSortingEnabled(True)
        self.table.selectionModel().selectionChanged.connect(self.on_table_selection_changed)
        self.empty_label = QLabel(wordWrap=True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table_stack = QStackedWidget()
        self.table_stack.addWidget(self.empty_label)
        self.table_stack.addWidget(self.table)
        return self.table_stack

    def _build_loaded_table(self) -> QStackedWidget:
        self.loaded_table = QTableView()
        self.loaded_table.setModel(self.loaded_model)
        self.loaded_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        rows = self.loaded_table.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.loaded_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(LoadedModelTable.NAME, QHeaderView.ResizeMode.Stretch)
        self.loaded_empty_label = QLabel(NOTHING_LOADED_TEXT, wordWrap=True)
        self.loaded_stack = QStackedWidget()
        self.loaded_stack.addWidget(self.loaded_empty_label)
        self.loaded_stack.addWidget(self.loaded_table)
        self.loaded_stack.setMaximumHeight(130)
        return self.loaded_stack

    # --- visibility and the connection -------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._shut_down:
            return
        self._loaded_timer.start()
        state = self._connection.state
        if not self.loaded and (state is None or state.connected):
            self.refresh()
        elif self._online:
            self.refresh_loaded()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._loaded_timer.stop()

    def on_loaded_timer_timeout(self) -> None:
        if self._online:
            self.refresh_loaded()

    def on_connection_state_changed(self, state: OllamaState) -> None:
        if self._shut_down:
            return
        self._online = state.connected
        if state.connected:
            self.refresh()
        else:
            self._forget_models()
        self._update_view()

    def shut_down(self) -> None:
        """Stop all work: the timer, every Ollama call, a pull under way, open dialogs."""
        self._shut_down = True
        self._loaded_timer.stop()
        self._tasks.cancel_all()
        if self.dialog is not None and isValid(self.dialog):
            self.dialog.reject()
        self.dialog = None

    def _forget_models(self) -> None:
        """Ollama went away: what it listed may be stale by the time it is back."""
        for task in (self._list_task, self._loaded_task, self._show_task):
            _cancel(task)
        self.loaded = False
        self._list_error = None
        self.model.set_models([])
        self.loaded_model.set_models([])
        self._shown = None
        self.details.clear("")

    @property
    def _client(self) -> OllamaClient:
        return self._connection.client

    def _start(
        self,
        work: Coroutine[Any, Any, T],
        on_success: Callable[[T], None],
        on_error: Callable[[TaskFailure], None],
        on_done: Callable[[], None] | None = None,
    ) -> asyncio.Task[T]:
        task = self._tasks.start(
            work,
            on_success=_if_alive(self, on_success),
            on_error=_if_alive(self, on_error),
            on_done=_if_alive(self, on_done) if on_done is not None else None,
        )
        return task

    # --- the list of models ------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the models (/api/tags) and the loaded models (/api/ps) again."""
        if self._shut_down:
            return
        _cancel(self._list_task)  # the newest answer is the one to show
        self._list_task = self._start(
            self._client.tags(), self.on_tags_succeeded, self.on_tags_failed
        )
        self.refresh_loaded()

    def on_tags_succeeded(self, models: list[ModelSummary]) -> None:
        self._online = True  # it answered, whatever the last status check said
        self._list_error = None
        keep = self._select_after_refresh or self.selected_name()
        self._select_after_refresh = None
        self.model.set_models(models)
        self.loaded = True
        self._select(keep)
        self._update_view()

    def on_tags_failed(self, failure: TaskFailure) -> None:
        self._list_error = failure.message
        self.status_message.emit(failure.message)
        self._update_view()

    def refresh_loaded(self) -> None:
        """Read the loaded models (/api/ps) again."""
        if self._shut_down:
            return
        _cancel(self._loaded_task)  # an answer asked for before now may be out of date
        self._loaded_task = self._start(self._client.ps(), self.on_ps_succeeded, self.on_ps_failed)

    def on_ps_succeeded(self, models: list[RunningModel]) -> None:
        self.loaded_model.set_models(models)
        self.loaded_empty_label.setText(NOTHING_LOADED_TEXT)
        self._update_loaded_view()

    def on_ps_failed(self, failure: TaskFailure) -> None:
        self.loaded_model.set_models([])
        self.loaded_empty_label.setText(failure.message)
        self._update_loaded_view()

    def on_filter_edit_text_changed(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_view()

    def selected_model(self) -> ModelSummary | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.model_at(self.proxy.mapToSource(rows[0]).row())

    def selected_name(self) -> str | None:
        selected = self.selected_model()
        return selected.name if selected else None

    def select_model(self, name: str) -> bool:
        """Select the model called `name` in the table; False when it is not shown."""
        row = self.model.row_of(name)
        index = self.proxy.mapFromSource(self.model.index(row, 0)) if row >= 0 else None
        if index is None or not index.isValid():
            return False
        self.table.selectRow(index.row())
        self.table.scrollTo(index)
        return True

    def _select(self, name: str | None) -> None:
        """After a reload: the model selected before (or asked for), else the first one."""
        if not (name and self.select_model(name)) and self.proxy.rowCount():
            self.table.selectRow(0)
        self._show_selected()  # a model reset clears the selection without saying so

    def _update_view(self) -> None:
        rows = self.model.rowCount()
        has_rows = self._online and rows > 0
        self.empty_label.setText(self._empty_text())
        self.table_stack.setCurrentWidget(self.table if has_rows else self.empty_label)
        self.list_notice.setText(self._list_error or "")
        self.list_notice.setVisible(has_rows and self._list_error is not None)
        shown = self.proxy.rowCount()
        count = f"{rows:,} model{'s' if rows != 1 else ''}"
        self.count_label.setText(
            "" if not has_rows else count if shown == rows else f"{shown:,} of {count}"
        )
        self.filter_edit.setEnabled(self._online)
        self.refresh_button.setEnabled(self._online or self._connection.state is None)
        self.pull_edit.setEnabled(self._online and self._pull_task is None)
        self.pull_button.setEnabled(self._online and self._pull_task is None)
        self._update_actions()
        self._update_loaded_view()

    def _empty_text(self) -> str:
        state = self._connection.state
        if not self._online:
            if state is None:
                return f"Checking whether Ollama is running at {self._connection.url}…"
            return state.message
        if self._list_error:
            return self._list_error
        return NO_MODELS_TEXT if self.loaded else "Reading the models…"

    def _update_actions(self) -> None:
        enabled = self._online and not self._changing and self.selected_model() is not None
        self.details.copy_button.setEnabled(enabled)
        self.details.delete_button.setEnabled(enabled)

    def _update_loaded_view(self) -> None:
        count = self.loaded_model.rowCount()
        has_rows = self._online and count > 0
        self.loaded_stack.setCurrentWidget(
            self.loaded_table if has_rows else self.loaded_empty_label
        )
        suffix = f" ({count})" if has_rows else ""
        self.loaded_title.setText(f"<b>Loaded in memory{suffix}</b>")
        # Offline there is nothing to say about memory; the empty state above says why.
        self.loaded_title.setVisible(self._online)
        self.loaded_stack.setVisible(self._online)

    # --- the details pane --------------------------------------------------------------------

    def on_table_selection_changed(self, _selected: QItemSelection, _old: QItemSelection) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        """Show the selected model's details, asking Ollama unless they are shown already."""
        self._update_actions()
        summary = self.selected_model()
        key = (summary.name, summary.digest) if summary else None
        if key == self._shown:
            return
        self._shown = key
        _cancel(self._show_task)  # only the latest selection's answer is shown
        if summary is None or key is None:
            self.details.clear(SELECT_TEXT if self.model.rowCount() else "")
            return
        self.details.show_loading(summary)
        self._show_task = self._start(
            self._client.show(summary.name),
            lambda info: self.on_show_succeeded(key, info),
            lambda failure: self.on_show_failed(key, failure),
        )

    def on_show_succeeded(self, key: tuple[str, str], info: ModelInfo) -> None:
        if key == self._shown:
            self.details.show_info(key[0], info)

    def on_show_failed(self, key: tuple[str, str], failure: TaskFailure) -> None:
        if key == self._shown:
            self._shown = None  # selecting it again asks again
            self.details.show_failure(key[0], failure.message)

    # --- pull --------------------------------------------------------------------------------

    @property
    def pulling(self) -> bool:
        return self._pull_task is not None

    def on_pull_button_clicked(self) -> None:
        name = self.pull_edit.text().strip()
        if not name:
            self._show_pull_message(PULL_HINT, error=True)
            return
        self.pull(name)

    def pull(self, name: str) -> None:
        """Pull `name` from the registry, showing its progress; one pull at a time."""
        if self._pull_task is not None or not self._online or self._shut_down:
            return
        self._pulling = name
        totals = PullTotals()
        self._show_pull_started(name)
        self._pull_task = self._start(
            self._pull_lines(name, totals),
            lambda _none: self.on_pull_succeeded(name),
            self.on_pull_failed,
            self.on_pull_finished,
        )
        self._update_view()

    async def _pull_lines(self, name: str, totals: PullTotals) -> None:
        # Cancelling the task closes the stream, which Ollama takes as the pull cancelled.
        async with aclosing(self._client.pull(name)) as lines:
            async for line in lines:
                totals.add(line)
                self.on_pull_progress(line, totals)

    def on_pull_progress(self, line: PullProgress, totals: PullTotals) -> None:
        if not isValid(self):
            return
        fraction = totals.fraction
        if fraction is None:
            self.progress_bar.setRange(0, 0)  # only status lines so far: busy, no figure
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(round(fraction * 1000))
            done, total = format_size(totals.completed), format_size(totals.total)
            self.progress_bar.setFormat(f"{done} of {total} (%p%)")
        self.pull_label.setText(f"Pulling {self._pulling}: {line.status}")

    def on_pull_succeeded(self, name: str) -> None:
        self._show_pull_message(f"Pulled {name}.")
        self.pull_edit.clear()
        self.status_message.emit(f"Pulled {name}.")
        self._select_after_refresh = full_name(name)
        self.refresh()
        self.models_changed.emit()

    def on_pull_failed(self, failure: TaskFailure) -> None:
        self._show_pull_message(failure.message, error=True)
        self.status_message.emit(failure.message)

    def on_pull_finished(self) -> None:
        task, self._pull_task = self._pull_task, None
        if task is not None and task.cancelled():
            text = f"The pull of {self._pulling} was cancelled."
            self._show_pull_message(text)
            self.status_message.emit(text)
        self.progress_bar.hide()
        self.cancel_button.hide()
        self._update_view()

    def on_cancel_button_clicked(self) -> None:
        if self._pull_task is not None:
            self._pull_task.cancel()
            self.cancel_button.setEnabled(False)
            self.pull_label.setText(f"Cancelling the pull of {self._pulling}…")

    def _show_pull_started(self, name: str) -> None:
        self.pull_label.setStyleSheet("")
        self.pull_label.setText(f"Pulling {name}…")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("%p%")
        self.cancel_button.setEnabled(True)
        for widget in (self.pull_label, self.progress_bar, self.cancel_button):
            widget.show()

    def _show_pull_message(self, text: str, *, error: bool = False) -> None:
        self.pull_label.setStyleSheet(ERROR_STYLE if error else "")
        self.pull_label.setText(text)
        self.pull_label.show()

    # --- delete and copy ---------------------------------------------------------------------

    def on_delete_button_clicked(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        text = (
            f"Delete the model {name} from Ollama? Its files are removed too, unless another "
            "model shares them. This cannot be undone."
        )
        self.dialog = confirm(self, "Delete model", text, lambda: self.delete(name))

    def delete(self, name: str) -> None:
        self._begin_change(f"Deleting {name}…")
        self._start(
            self._client.delete(name),
            lambda _none: self._after_change(f"Deleted {name}."),
            self.on_change_failed,
        )

    def on_copy_button_clicked(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        dialog = CopyModelDialog(name, self)
        dialog.copy_requested.connect(lambda target: self.copy(name, target, dialog))
        self.dialog = dialog
        dialog.open()

    def copy(self, source: str, destination: str, dialog: CopyModelDialog | None = None) -> None:
        """Copy `source` as `destination`; errors go to `dialog` when one asked."""

        def on_error(failure: TaskFailure) -> None:
            if dialog is not None and isValid(dialog) and dialog.isVisible():
                self._end_change()
                dialog.show_failure(failure.message)
            else:
                self.on_change_failed(failure)

        def on_success(_none: None) -> None:
            if dialog is not None and isValid(dialog):
                dialog.done_copying()
            self._select_after_refresh = destination
            self._after_change(f"Copied {source} to {destination}.")

        self._begin_change(f"Copying {source} to {destination}…")
        self._start(self._client.copy(source, destination), on_success, on_error)

    def _begin_change(self, text: str) -> None:
        self._changing = True
        self._update_actions()
        self.status_message.emit(text)

    def _end_change(self) -> None:
        self._changing = False
        self._update_actions()

    def _after_change(self, text: str) -> None:
        self._end_change()
        self.status_message.emit(text)
        self.refresh()
        self.models_changed.emit()

    def on_change_failed(self, failure: TaskFailure) -> None:
        self._end_change()
        self.status_message.emit(failure.message)
        show_error(self, failure.message)


class ModelDetailsPane(QWidget):
    """What /api/show says about one model: its facts, template, parameters, system prompt and
    license; and the Copy… and Delete buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        header = QHBoxLayout()
        self.title_label = QLabel()
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QPushButton("Copy…")
        self.copy_button.setToolTip("Copy the model under a new name (it shares the same files)")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the model from Ollama")
        header.addWidget(self.title_label, 1)
        header.addWidget(self.copy_button)
        header.addWidget(self.delete_button)
        layout.addLayout(header)
        self.message_label = QLabel(wordWrap=True)
        layout.addWidget(self.message_label)
        # The facts and texts show only once Ollama has described the model.
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addLayout(self._build_facts())
        body.addWidget(self._build_texts(), 1)
        layout.addWidget(self.body, 1)
        layout.addStretch(0)
        self.clear(SELECT_TEXT)

    def _build_facts(self) -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.facts: dict[str, QLabel] = {}
        for name in FACTS:
            label = QLabel(wordWrap=True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.facts[name] = label
            form.addRow(f"{name}:", label)
        return form

    def _build_texts(self) -> QTabWidget:
        self.template_text = _text_box()
        self.parameters_text = _text_box()
        self.system_text = _text_box()
        self.system_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.license_text = _text_box()
        self.license_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.texts = QTabWidget()
        for box, title in (
            (self.template_text, "Template"),
            (self.parameters_text, "Parameters"),
            (self.system_text, "System prompt"),
            (self.license_text, "License"),
        ):
            self.texts.addTab(box, title)
        return self.texts

    def clear(self, message: str) -> None:
        self.title_label.setText("")
        self._set_message(message)
        self._fill({}, "", "", "", "")

    def show_loading(self, summary: ModelSummary) -> None:
        self.title_label.setText(f"<h3>{html.escape(summary.name)}</h3>")
        self._set_message(f"Asking Ollama about {summary.name}…")
        self._fill({}, "", "", "", "")

    def show_failure(self, name: str, message: str) -> None:
        self.title_label.setText(f"<h3>{html.escape(name)}</h3>")
        self._set_message(message, error=True)
        self._fill({}, "", "", "", "")

    def show_info(self, name: str, info: ModelInfo) -> None:
        self.title_label.setText(f"<h3>{html.escape(name)}</h3>")
        self._set_message("")
        self._fill(model_facts(info), info.template, info.parameters, info.system, info.license)
        self.body.show()

    def _set_message(self, text: str, *, error: bool = False) -> None:
        self.message_label.setStyleSheet(ERROR_STYLE if error else "")
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    def _fill(
        self, facts: dict[str, str], template: str, parameters: str, system: str, license_: str
    ) -> None:
        self.body.setVisible(bool(facts))
        for name, label in self.facts.items():
            label.setText(facts.get(name, ""))
        self.facts["License"].setToolTip(
            "The full text is in the License tab below." if license_ else ""
        )
        self.template_text.setPlainText(template)
        self.parameters_text.setPlainText(parameters)
        self.system_text.setPlainText(system)
        self.license_text.setPlainText(license_)


def model_facts(info: ModelInfo) -> dict[str, str]:
    """The details pane's facts about a model, as text; "" where Ollama does not say."""
    details = info.details
    count = info.model_info.get("general.parameter_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        size = f" ({details.parameter_size})" if details.parameter_size else ""
        parameters = f"{count:,}{size}"
    else:
        parameters = details.parameter_size
    return {
        "Architecture": info.architecture,
        "Parameters": parameters,
        "Quantisation": details.quantization_level,
        "Context length": _tokens(info.context_length),
        "Embedding length": f"{info.embedding_length:,}" if info.embedding_length else "",
        "Family": ", ".join(details.families) or details.family,
        "Parent model": details.parent_model or "none",
        "Capabilities": ", ".join(info.capabilities),
        "License": license_preview(info.license),
    }


def license_preview(text: str) -> str:
    """The license's first line, elided: the whole text is in its own box."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "none given"
    first = lines[0]
    if len(first) > _LICENSE_PREVIEW_CHARS:
        return first[: _LICENSE_PREVIEW_CHARS - 1].rstrip() + "…"
    return first + (" …" if len(lines) > 1 else "")


def _tokens(count: int | None) -> str:
    return f"{count:,} tokens" if count else ""


class CopyModelDialog(QDialog):
    """Asks for the name of a copy; `copy_requested(name)` on Copy with a name. It stays open
    while Ollama copies: `done_copying()` closes it, `show_failure(text)` says why not."""

    copy_requested = Signal(str)

    def __init__(self, source: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Copy {source}")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Copy {html.escape(source)} under the name:"))
        self.name_edit = QLineEdit(suggested_copy_name(source))
        self.name_edit.selectAll()
        self.name_edit.textChanged.connect(self.on_name_edit_text_changed)
        layout.addWidget(self.name_edit)
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()
        layout.addWidget(self.error_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Copy")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(420)

    def on_name_edit_text_changed(self, text: str) -> None:
        self.ok_button.setEnabled(bool(text.strip()))
        self.error_label.hide()

    def accept(self) -> None:
        name = self.name_edit.text().strip()
        if not name:
            self.show_failure("Type a name for the copy.")
            return
        self.ok_button.setEnabled(False)
        self.name_edit.setEnabled(False)
        self.error_label.hide()
        self.copy_requested.emit(name)

    def show_failure(self, text: str) -> None:
        self.name_edit.setEnabled(True)
        self.ok_button.setEnabled(bool(self.name_edit.text().strip()))
        self.error_label.setText(text)
        self.error_label.show()

    def done_copying(self) -> None:
        super().accept()


def suggested_copy_name(source: str) -> str:
    """`smollm2:135m` → `smollm2-copy:135m`."""
    name = full_name(source)
    model, _, tag = name.rpartition(":")
    return f"{model}-copy:{tag}"
