"""The Datasets tab: the datasets, their statistics and a preview, and importing new ones."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelection, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.datasets.import_process import import_in_child
from app.datasets.importer import ImportCancelled, ImportOptions, ImportProgress
from app.datasets.repository import (
    dataset_files,
    delete_dataset,
    list_datasets,
    rename_dataset,
    set_split,
)
from app.db.models import Dataset
from app.settings import AppSettings
from app.workers.background import TaskCancelled, TaskContext, TaskFailure, TaskHandle, TaskRunner
from ui.dataset_models import DatasetTableModel, RecordPreviewModel, render_json, render_messages
from ui.dialogs import confirm, show_error
from ui.histogram import LengthHistogram
from ui.import_dialog import ImportDialog

FILE_FILTER = "Datasets (*.json *.jsonl *.ndjson *.csv *.tsv *.parquet *.txt);;All files (*)"


class DatasetsTab(QWidget):
    """Signals: `datasets_changed()` after an import, rename, split or delete;
    `status_message(str)` for the status bar."""

    datasets_changed = Signal()
    status_message = Signal(str)

    def __init__(self, context: AppContext, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._import_handle: TaskHandle | None = None
        self._pending: list[Path] = []
        self._dialog: QDialog | None = None
        self.model = DatasetTableModel()
        self.preview_model = RecordPreviewModel()
        self._build()
        self.refresh()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_toolbar())
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_table())
        splitter.addWidget(self._build_detail())
        splitter.setSizes([470, 730])
        layout.addWidget(splitter, 1)
        layout.addLayout(self._build_progress_row())

    def _build_toolbar(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Import a dataset file (Ctrl+O), or drop files on the window")
        self.import_button.clicked.connect(self.request_import)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.clicked.connect(self.on_rename_button_clicked)
        self.split_button = QPushButton("Split…")
        self.split_button.setToolTip("Choose how many records are held out for validation")
        self.split_button.clicked.connect(self.on_split_button_clicked)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.on_delete_button_clicked)
        for button in (
            self.import_button,
            self.rename_button,
            self.split_button,
            self.delete_button,
        ):
            row.addWidget(button)
        row.addStretch(1)
        return row

    def _build_table(self) -> QTableView:
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(self.on_table_selection_changed)
        self.empty_label = QLabel(
            "No datasets yet. Import a JSON, JSON Lines, CSV, TSV, Parquet or text file with "
            "Import… or by dropping it on the window."
        )
        return self.table

    def _build_detail(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.histogram = LengthHistogram()
        self.preview_table = QTableView()
        self.preview_table.setModel(self.preview_model)
        self.preview_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.preview_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.preview_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.original_text = QPlainTextEdit(readOnly=True)
        self.normalised_text = QPlainTextEdit(readOnly=True)
        records = QSplitter(Qt.Orientation.Horizontal)
        records.addWidget(self.original_text)
        records.addWidget(self.normalised_text)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(self.preview_table)
        vertical.addWidget(records)
        vertical.setSizes([300, 200])
        layout.addWidget(self.summary_label)
        layout.addWidget(self.histogram)
        layout.addWidget(vertical, 1)
        self._show_dataset(None)
        return pane

    def _build_progress_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.progress_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        for widget in (self.progress_label, self.progress_bar, self.cancel_button):
            row.addWidget(widget)
            widget.hide()
        return row

    # --- the list and the detail pane --------------------------------------------------------

    def refresh(self, select_id: str | None = None) -> None:
        """Reload the list (a small indexed query; SQLite in WAL never blocks a reader)."""
        selected = self.selected_dataset()
        current = select_id or (selected.id if selected else None)
        self.model.set_datasets(list_datasets(self._context.database))
        row = self.model.row_of(current) if current else -1
        if row < 0 and self.model.rowCount():
            row = 0
        if row >= 0:
            self.table.selectRow(row)
        else:
            self._show_dataset(None)

    def selected_dataset(self) -> Dataset | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.dataset_at(rows[0].row()) if rows else None

    def on_table_selection_changed(self, _selected: QItemSelection, _old: QItemSelection) -> None:
        self._show_dataset(self.selected_dataset())

    def on_preview_selection_changed(self, _selected: QItemSelection, _old: QItemSelection) -> None:
        rows = self.preview_table.selectionModel().selectedRows()
        pair = self.preview_model.record_at(rows[0].row()) if rows else None
        original, normalised = pair if pair else ({}, {})
        self.original_text.setPlainText(render_json(original, indent=True) if pair else "")
        self.normalised_text.setPlainText(render_messages(normalised) if pair else "")

    def _show_dataset(self, dataset: Dataset | None) -> None:
        for button in (self.rename_button, self.split_button, self.delete_button):
            button.setEnabled(dataset is not None)
        if dataset is None:
            self.summary_label.setText(self.empty_label.text() if not self.model.rowCount() else "")
            self.histogram.set_histogram([], [])
            self._set_preview(RecordPreviewModel())
            return
        self.summary_label.setText(summary_html(dataset))
        histogram = dataset.stats.get("histogram") or {}
        self.histogram.set_histogram(histogram.get("edges", []), histogram.get("counts", []))
        files = dataset_files(self._context.home, dataset)
        self._set_preview(RecordPreviewModel(files.source, files.records))

    def _set_preview(self, model: RecordPreviewModel) -> None:
        old = self.preview_model
        if model.canFetchMore():
            model.fetchMore()  # the first page now; the view asks for more as it scrolls
        self.preview_model = model
        self.preview_table.setModel(model)
        self.preview_table.selectionModel().selectionChanged.connect(
            self.on_preview_selection_changed
        )
        old.deleteLater()
        self.original_text.clear()
        self.normalised_text.clear()

    # --- import ------------------------------------------------------------------------------

    def request_import(self) -> None:
        """Ask for a file (the dialog opens without a nested event loop)."""
        dialog = QFileDialog(self, "Import a dataset", str(Path.home()), FILE_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.filesSelected.connect(lambda files: self.import_files([Path(f) for f in files]))
        self._dialog = dialog
        dialog.open()

    def import_files(self, paths: list[Path]) -> None:
        """Show the import dialog for each file in turn (drag and drop lands here too)."""
        self._pending.extend(paths)
        self._next_import()

    def _next_import(self) -> None:
        if self._import_handle is not None or isinstance(self._dialog, ImportDialog):
            return
        if not self._pending:
            return
        path = self._pending.pop(0)
        dialog = ImportDialog(path, self._context.home, self._runner, self._base_options(), self)
        dialog.import_requested.connect(self.start_import)
        dialog.rejected.connect(self.on_import_dialog_rejected)
        self._dialog = dialog
        dialog.open()

    def on_import_dialog_rejected(self) -> None:
        self._dialog = None
        self._next_import()

    def _base_options(self) -> ImportOptions:
        return default_import_options(self._context.settings.load())

    def start_import(self, path: Path, options: ImportOptions) -> None:
        """Import `path` off the GUI thread, with a progress bar and a Cancel button."""
        self._dialog = None
        database, home = self._context.database, self._context.home

        def work(context: TaskContext) -> Dataset:
            try:
                return import_in_child(
                    database,
                    home,
                    path,
                    options,
                    progress=context.progress,
                    cancelled=context.cancelled,
                )
            except ImportCancelled as cancelled:
                raise TaskCancelled from cancelled

        self._show_progress(f"Importing {path.name}…")
        self._import_handle = self._runner.submit(
            work,
            on_success=self.on_import_succeeded,
            on_error=self.on_import_failed,
            on_progress=self.on_import_progress,
        )

    def on_import_progress(self, progress: ImportProgress) -> None:
        if progress.total_bytes:
            self.progress_bar.setValue(int(1000 * progress.bytes_read / progress.total_bytes))
        self.progress_label.setText(f"Importing: {progress.records:,} records read")

    def on_import_succeeded(self, dataset: Dataset) -> None:
        self._import_finished()
        self.refresh(select_id=dataset.id)
        self.datasets_changed.emit()
        skipped = f", {dataset.invalid_rows:,} invalid skipped" if dataset.invalid_rows else ""
        self.status_message.emit(
            f"Imported {dataset.name}: {dataset.rows:,} records as {dataset.format}{skipped}."
        )

    def on_import_failed(self, failure: TaskFailure) -> None:
        self._import_finished()
        if failure.cancelled:
            self.status_message.emit("Import cancelled; nothing was kept.")
        else:
            show_error(self, failure.message)

    def on_cancel_button_clicked(self) -> None:
        if self._import_handle is not None:
            self._import_handle.cancel()
            self.cancel_button.setEnabled(False)
            self.progress_label.setText("Cancelling…")

    @property
    def importing(self) -> bool:
        return self._import_handle is not None

    def _show_progress(self, text: str) -> None:
        self.progress_label.setText(text)
        self.progress_bar.setValue(0)
        self.cancel_button.setEnabled(True)
        for widget in (self.progress_label, self.progress_bar, self.cancel_button):
            widget.show()

    def _import_finished(self) -> None:
        self._import_handle = None
        for widget in (self.progress_label, self.progress_bar, self.cancel_button):
            widget.hide()
        self._next_import()

    # --- rename, split, delete -------------------------------------------------------------

    def on_rename_button_clicked(self) -> None:
        dataset = self.selected_dataset()
        if dataset is None:
            return
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Rename dataset")
        dialog.setLabelText("New name:")
        dialog.setTextValue(dataset.name)
        dialog.textValueSelected.connect(lambda name: self.rename(dataset.id, name))
        self._dialog = dialog
        dialog.open()

    def rename(self, dataset_id: str, name: str) -> None:
        database = self._context.database
        self._run_change(lambda _c: rename_dataset(database, dataset_id, name), "Renamed.")

    def on_split_button_clicked(self) -> None:
        dataset = self.selected_dataset()
        if dataset is None:
            return
        dialog = SplitDialog(dataset, self)
        dialog.split_chosen.connect(lambda f, s: self.split(dataset.id, f, s))
        self._dialog = dialog
        dialog.open()

    def split(self, dataset_id: str, fraction: float, seed: int) -> None:
        database, home = self._context.database, self._context.home
        self._run_change(
            lambda _c: set_split(database, home, dataset_id, fraction, seed), "Split saved."
        )

    def on_delete_button_clicked(self) -> None:
        dataset = self.selected_dataset()
        if dataset is None:
            return
        text = (
            f"Delete the dataset {dataset.name!r} ({dataset.rows:,} records) and its files? "
            "This cannot be undone."
        )
        self._dialog = confirm(self, "Delete dataset", text, lambda: self.delete(dataset.id))

    def delete(self, dataset_id: str) -> None:
        database, home = self._context.database, self._context.home
        self._run_change(lambda _c: delete_dataset(database, home, dataset_id), "Deleted.")

    def _run_change(self, work: Any, done_message: str) -> None:
        """A write (it may wait on SQLite's lock or remove files), run off the GUI thread."""

        def on_success(result: object) -> None:
            self.refresh(select_id=result.id if isinstance(result, Dataset) else None)
            self.datasets_changed.emit()
            self.status_message.emit(done_message)

        def on_error(failure: TaskFailure) -> None:
            show_error(self, failure.message)

        self._runner.submit(work, on_success=on_success, on_error=on_error)


class SplitDialog(QDialog):
    """Emits `split_chosen(fraction, seed)`."""

    split_chosen = Signal(float, int)

    def __init__(self, dataset: Dataset, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Validation split of {dataset.name}")
        form = QFormLayout(self)
        self.fraction = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=0.5, singleStep=0.01)
        self.fraction.setValue(dataset.validation_fraction)
        self.fraction.setToolTip("Share of records held out to measure evaluation loss")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.seed.setValue(dataset.split_seed)
        self.seed.setToolTip("The same seed always picks the same records")
        form.addRow("Validation fraction", self.fraction)
        form.addRow("Seed", self.seed)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def accept(self) -> None:
        super().accept()
        self.split_chosen.emit(self.fraction.value(), self.seed.value())


def default_import_options(settings: AppSettings, name: str | None = None) -> ImportOptions:
    """An import as the settings want it: their size limit, validation share and seed."""
    return ImportOptions(
        name=name,
        size_limit_bytes=settings.import_size_limit_bytes,
        validation_fraction=settings.hyperparameters.eval_fraction,
        split_seed=settings.hyperparameters.seed,
    )


def summary_html(dataset: Dataset) -> str:
    """The detail pane's statistics, from what the import stored (never estimated here)."""
    stats = dataset.stats
    roles = ", ".join(f"{role} {count:,}" for role, count in stats.get("role_counts", {}).items())
    chars = stats.get("characters", {})
    tokens = stats.get("tokens_approx", {})
    rows = [
        ("Records", f"{dataset.rows:,}"),
        ("Invalid, skipped", f"{dataset.invalid_rows:,}"),
        ("Empty", f"{dataset.empty_rows:,}"),
        ("Duplicates", f"{dataset.duplicate_rows:,}"),
        (
            "Validation",
            f"{dataset.validation_rows:,} held out "
            f"({dataset.validation_fraction:.0%}, seed {dataset.split_seed})",
        ),
        ("Format", f"{dataset.format} (from {dataset.container})"),
        ("Source", f"{dataset.source_name}, {dataset.size_bytes / 1e6:,.1f} MB"),
        ("Columns", ", ".join(dataset.columns)),
    ]
    if roles:
        rows.append(("Turns by role", roles))
    if chars:
        rows.append(("Characters", _spread(chars)))
    if tokens:
        rows.append(("Tokens (approx.)", _spread(tokens)))
    body = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in rows)
    return f"<h3>{html.escape(dataset.name)}</h3><table>{body}</table>"


def _spread(values: dict[str, Any]) -> str:
    keys = ("min", "p50", "p90", "p99", "max")
    return ", ".join(f"{key} {values[key]:,.0f}" for key in keys if key in values)
