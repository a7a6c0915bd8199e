"""The Settings tab's Clusters section: the Ray clusters a job can run on, with Add…, Edit…,
Remove and Check (the dialog that adds or edits one is ui.cluster_dialog).

Whatever may wait runs on the window's TaskRunner: the database, the OS keyring (D-Bus on
Linux), and the cluster's head. A token goes to the keyring through ClusterStore.add, never
into the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.executors.clusters import Cluster, ClusterStore
from app.workers.background import TaskFailure, TaskRunner
from ui.cluster_dialog import FIELD_TIPS, ClusterDialog, ClusterSaved
from ui.dialogs import ERROR_STYLE, OK_STYLE, WARNING_STYLE, confirm
from ui.job_models import submit_for

# The table's columns: the dialog's fields (their tooltips too), and where the token is kept.
COLUMNS = {"name": "Name", "url": "Dashboard URL", "storage": "Storage", "gpus": "GPUs"}
COLUMNS |= {"cpus": "CPUs", "token": "Token"}
TOKEN_TIP = "Where the token is kept: the OS keyring, an environment variable, or none."
EMPTY_TEXT = "No clusters yet: Add… one to run jobs on a Ray cluster instead of this machine."


def _count(value: float, unit: str) -> str:
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def resources_text(cluster: Cluster) -> str:
    """What the cluster gives a job, e.g. `1 GPU and 4 CPUs`."""
    return f"{_count(cluster.gpus, 'GPU')} and {_count(cluster.cpus, 'CPU')}"


def target_text(cluster: Cluster, method: str) -> str:
    """What the New Job dialog says of a job that runs on `cluster` with `method`."""
    text = (
        f"It trains on cluster {cluster.name}, which gives a job {resources_text(cluster)}; its "
        f"data and results go through {cluster.storage}. This machine's memory and GPUs do not "
        "matter for it."
    )
    if method == "qlora" and cluster.gpus == 0:
        text += f" QLoRA needs a GPU, and {cluster.name} gives a job none: set its GPUs in "
        text += "Settings, Clusters, or choose LoRA."
    return text


@dataclass(frozen=True)
class ClusterRow:
    """A cluster as the table shows it."""

    cluster: Cluster
    token: str  # where its token is kept (ClusterStore.token_source)

    def cells(self) -> list[str]:
        c = self.cluster
        return [c.name, c.url, c.storage, f"{c.gpus:g}", f"{c.cpus:g}", self.token]


def load_rows(store: ClusterStore) -> list[ClusterRow]:
    return [ClusterRow(cluster, store.token_source(cluster)) for cluster in store.all()]


class ClustersPanel(QGroupBox):
    """The clusters in a table, with their buttons.

    Signals: `clusters_changed(list[Cluster])` each time the list is read, `status_message(str)`.
    """

    clusters_changed = Signal(list)
    status_message = Signal(str)

    def __init__(self, context: AppContext, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__("Clusters", parent)
        self._store = ClusterStore(context.database)
        self._runner = runner
        self._rows: list[ClusterRow] = []
        self._busy = False  # a save, remove or check is under way
        self.dialog: ClusterDialog | None = None
        self.loaded = False
        self._build()
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Ray clusters a job can run on instead of this machine (New job, Run on). "
            "Changes here are saved at once."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addWidget(self._build_table())
        layout.addLayout(self._build_buttons())
        self.status_label = QLabel(wordWrap=True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)

    def _build_table(self) -> QTableWidget:
        self.table = QTableWidget(0, len(COLUMNS))
        for column, (key, title) in enumerate(COLUMNS.items()):
            item = QTableWidgetItem(title)
            item.setToolTip(TOKEN_TIP if key == "token" else FIELD_TIPS[key])
            self.table.setHorizontalHeaderItem(column, item)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(110)
        self.table.setMaximumHeight(160)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.on_edit_button_clicked())
        return self.table

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.add_button = _button(row, "Add…", "Add a Ray cluster jobs can run on")
        self.add_button.clicked.connect(self.on_add_button_clicked)
        tip = "Change the selected cluster's URL, storage, token or resources"
        self.edit_button = _button(row, "Edit…", tip)
        self.edit_button.clicked.connect(self.on_edit_button_clicked)
        tip = "Forget the selected cluster and its token"
        self.remove_button = _button(row, "Remove", tip)
        self.remove_button.clicked.connect(self.on_remove_button_clicked)
        tip = "Ask the selected cluster's head for its Ray version; check that its storage works"
        self.check_button = _button(row, "Check", tip)
        self.check_button.clicked.connect(self.on_check_button_clicked)
        row.addStretch(1)
        self._update_buttons()
        return row

    # --- the list ----------------------------------------------------------------------------

    @property
    def clusters(self) -> list[Cluster]:
        return [row.cluster for row in self._rows]

    def refresh(self, select: str | None = None) -> None:
        """Read the clusters (and where their tokens are) again."""
        store = self._store
        chosen = select or self._selected_name()
        submit_for(
            self,
            self._runner,
            lambda _c: load_rows(store),
            on_success=lambda rows: self._show_rows(rows, chosen),
            on_error=lambda failure: self._show_note(failure.message, ERROR_STYLE),
        )

    def _show_rows(self, rows: list[ClusterRow], select: str | None) -> None:
        self._rows = rows
        self.table.setRowCount(len(rows))
        for number, row in enumerate(rows):
            for column, text in enumerate(row.cells()):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if column in (3, 4):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(number, column, item)
        names = [row.cluster.name for row in rows]
        if select in names:
            self.table.selectRow(names.index(select))
        elif rows:
            self.table.selectRow(0)
        note = self.status_label.text()
        if not rows and not note:
            self._show_note(EMPTY_TEXT)
        elif rows and note == EMPTY_TEXT:
            self._show_note("")
        self.loaded = True
        self._update_buttons()
        self.clusters_changed.emit(self.clusters)

    def _selected_name(self) -> str | None:
        row = self.selected_row()
        return row.cluster.name if row is not None else None

    def selected_row(self) -> ClusterRow | None:
        chosen = self.table.selectionModel().selectedRows()
        if not chosen or chosen[0].row() >= len(self._rows):
            return None
        return self._rows[chosen[0].row()]

    def _update_buttons(self) -> None:
        chosen = self.selected_row() is not None and not self._busy
        for button in (self.edit_button, self.remove_button, self.check_button):
            button.setEnabled(chosen)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_buttons()

    def _show_note(self, text: str, style: str = "") -> None:
        self.status_label.setStyleSheet(style)
        self.status_label.setText(text)

    # --- add and edit ------------------------------------------------------------------------

    def on_add_button_clicked(self) -> None:
        self._open_dialog(None)

    def on_edit_button_clicked(self) -> None:
        row = self.selected_row()
        if row is not None:
            self._open_dialog(row.cluster)

    def _open_dialog(self, cluster: Cluster | None) -> None:
        taken = frozenset(row.cluster.name for row in self._rows)
        dialog = ClusterDialog(self._store, self._runner, cluster, taken, self)
        dialog.saved.connect(self.on_dialog_saved)
        dialog.finished.connect(dialog.deleteLater)
        self.dialog = dialog
        dialog.open()

    def on_dialog_saved(self, saved: ClusterSaved) -> None:
        self._show_note(saved.note(), WARNING_STYLE if saved.warning else OK_STYLE)
        self.status_message.emit(f"Saved cluster {saved.cluster.name}.")
        self.refresh(select=saved.cluster.name)

    # --- remove ------------------------------------------------------------------------------

    def on_remove_button_clicked(self) -> None:
        name = self._selected_name()
        if name is None:
            return
        confirm(
            self,
            "Remove cluster",
            f"Remove cluster {name} and forget its token? Jobs that target it cannot start "
            "until a cluster of that name is added again.",
            lambda: self.remove_cluster(name),
            yes_text="Remove",
        )

    def remove_cluster(self, name: str) -> None:
        """Forget `name` and its token (the question has been answered)."""
        store = self._store
        self._run(lambda: store.remove(name), lambda _cluster: self._on_removed(name))

    def _run(self, work: Callable[[], object], on_success: Callable[[Any], None]) -> None:
        """`work` on the runner, the buttons off until it answers."""

        def succeeded(result: object) -> None:
            self._set_busy(False)
            on_success(result)

        self._set_busy(True)
        submit_for(self, self._runner, lambda _c: work(), succeeded, self._on_failed)

    def _on_removed(self, name: str) -> None:
        self._show_note(f"Removed cluster {name} and its token.")
        self.status_message.emit(f"Removed cluster {name}.")
        self.refresh()

    def _on_failed(self, failure: TaskFailure) -> None:
        self._set_busy(False)
        self._show_note(failure.message, ERROR_STYLE)

    # --- check -------------------------------------------------------------------------------

    def on_check_button_clicked(self) -> None:
        name = self._selected_name()
        if name is None:
            return
        store = self._store
        self._show_note(f"Checking {name}…")
        self._run(lambda: store.check(name), lambda answer: self._on_checked(name, answer))

    def _on_checked(self, name: str, answer: str) -> None:
        self._show_note(f"Cluster {name} answers: {answer}; its storage can be written.", OK_STYLE)


def _button(row: QHBoxLayout, text: str, tip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    row.addWidget(button)
    return button
