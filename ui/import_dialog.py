"""The import dialog: shows how a file was read (format, columns, a sample, normalised) before
anything is written, and lets the user override the format or map columns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.datasets.formats import FIELDS, FORMATS
from app.datasets.import_process import inspect_in_child
from app.datasets.importer import ImportOptions, Inspection
from app.paths import DataHome
from app.workers.background import TaskContext, TaskFailure, TaskRunner
from ui.dataset_models import render_json, render_messages
from ui.dialogs import ERROR_STYLE

_DETECT = ""  # the format combo's "detect automatically" entry
_NO_COLUMN = "(none)"
_TABULAR = ("csv", "tsv", "parquet")


class ImportDialog(QDialog):
    """Emits `import_requested(path, options)` when the user clicks Import."""

    import_requested = Signal(object, object)

    def __init__(
        self,
        path: Path,
        home: DataHome,
        runner: TaskRunner,
        base: ImportOptions,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._home = home
        self.setWindowTitle(f"Import {path.name}")
        self.resize(820, 560)
        self.path = path
        self._runner = runner
        self._base = base
        self._generation = 0
        self.inspection: Inspection | None = None
        self._build()
        self._inspect()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.name_edit = QLineEdit(self._base.name or self.path.stem)
        self.format_combo = QComboBox()
        self.format_combo.addItem("Detect automatically", _DETECT)
        for name in FORMATS:
            self.format_combo.addItem(name, name)
        self.format_combo.currentIndexChanged.connect(self.on_format_combo_changed)
        self.detected_label = QLabel("Reading the file…")
        self.skip_invalid_check = QCheckBox("Skip records that do not fit the format")
        form.addRow("Name", self.name_edit)
        form.addRow("Format", self.format_combo)
        form.addRow("", self.detected_label)
        form.addRow("", self.skip_invalid_check)
        layout.addLayout(form)
        self.mapping_group = QGroupBox("Columns")
        self.mapping_form = QFormLayout(self.mapping_group)
        self.mapping_group.hide()
        layout.addWidget(self.mapping_group)
        self.sample_table = QTableWidget(0, 2)
        self.sample_table.setHorizontalHeaderLabels(["Original", "Normalised"])
        self.sample_table.horizontalHeader().setStretchLastSection(True)
        self.sample_table.setColumnWidth(0, 380)
        self.sample_table.setWordWrap(True)
        layout.addWidget(self.sample_table, 1)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(ERROR_STYLE)
        layout.addWidget(self.problem_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.import_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.import_button.setText("Import")
        self.import_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    # --- inspection --------------------------------------------------------------------------

    def options(self) -> ImportOptions:
        """The options as the dialog shows them now."""
        chosen = self.format_combo.currentData() or None
        return replace(
            self._base,
            name=self.name_edit.text().strip() or None,
            format=chosen,
            mapping=self._mapping(),
            skip_invalid=self.skip_invalid_check.isChecked(),
        )

    def _mapping(self) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for row in range(self.mapping_form.rowCount()):
            item = self.mapping_form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            combo = item.widget() if item is not None else None
            if isinstance(combo, QComboBox) and combo.currentText() != _NO_COLUMN:
                mapping[str(combo.property("field"))] = combo.currentText()
        return mapping

    def _inspect(self, options: ImportOptions | None = None) -> None:
        self._generation += 1
        generation = self._generation
        options = options or self.options()
        self.import_button.setEnabled(False)
        path, home = self.path, self._home

        def work(_context: TaskContext) -> Inspection:
            return inspect_in_child(home, path, options)

        self._runner.submit(
            work,
            on_success=lambda result: self._on_inspected(generation, result),
            on_error=lambda failure: self._on_inspect_failed(generation, failure),
        )

    def _on_inspected(self, generation: int, inspection: Inspection) -> None:
        if generation != self._generation:
            return  # a newer inspection is on its way
        self.inspection = inspection
        fmt = inspection.format or "not recognised"
        self.detected_label.setText(
            f"Read as {inspection.container}, format {fmt}; "
            f"columns: {', '.join(inspection.columns)}"
        )
        self._show_mapping(inspection)
        self._show_sample(inspection)
        self.problem_label.setText(inspection.problem or "")
        self.import_button.setEnabled(inspection.problem is None and inspection.format is not None)

    def _on_inspect_failed(self, generation: int, failure: TaskFailure) -> None:
        if generation != self._generation:
            return
        self.inspection = None
        self.detected_label.setText("The file cannot be imported.")
        self.problem_label.setText(failure.message)
        self.import_button.setEnabled(False)

    def _show_mapping(self, inspection: Inspection) -> None:
        tabular = inspection.container in _TABULAR or inspection.format is None
        fmt = self.format_combo.currentData() or inspection.format
        while self.mapping_form.rowCount():
            self.mapping_form.removeRow(0)
        if not tabular or fmt not in FIELDS:
            self.mapping_group.hide()
            return
        current = self.options().mapping or inspection.suggested_mapping
        for field in FIELDS[fmt]:
            self.mapping_form.addRow(field, self._column_combo(field, inspection, current))
        self.mapping_group.show()

    def _column_combo(
        self, field: str, inspection: Inspection, mapping: dict[str, str]
    ) -> QComboBox:
        combo = QComboBox()
        combo.setProperty("field", field)
        combo.addItems([_NO_COLUMN, *inspection.columns])
        chosen = mapping.get(field) or (field if field in inspection.columns else _NO_COLUMN)
        combo.setCurrentText(chosen)
        combo.currentIndexChanged.connect(self.on_mapping_changed)
        return combo

    def _show_sample(self, inspection: Inspection) -> None:
        pairs = list(zip(inspection.sample_original, inspection.sample_normalised, strict=False))
        self.sample_table.setRowCount(len(pairs))
        for row, (original, normalised) in enumerate(pairs):
            self.sample_table.setItem(row, 0, _cell(render_json(original, 600)))
            self.sample_table.setItem(row, 1, _cell(render_messages(normalised, 600)))
        self.sample_table.resizeRowsToContents()

    # --- slots -------------------------------------------------------------------------------

    def on_format_combo_changed(self, _index: int) -> None:
        options = self.options()
        self._inspect(replace(options, mapping={}))

    def on_mapping_changed(self, _index: int) -> None:
        self._inspect()

    def accept(self) -> None:
        if not self.import_button.isEnabled():
            return
        options = self.options()
        if options.format is None and self.inspection is not None:
            options = replace(options, format=self.inspection.format)
        super().accept()
        self.import_requested.emit(self.path, options)


def _cell(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setToolTip(text)
    return item
