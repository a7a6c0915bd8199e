"""The Settings tab: every setting in a form; invalid values get a message beside the field.
Below it, the Ray clusters jobs can run on (ui.clusters_panel), saved as they change."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.errors import KnownError
from app.settings import AppSettings, Hyperparameters, SettingsStore, flatten, validate_settings
from app.workers.background import TaskFailure, TaskRunner
from ui.async_tasks import AsyncTasks
from ui.clusters_panel import ClustersPanel
from ui.dialogs import ERROR_STYLE

_OK_STYLE = "color: #15803d;"
_GENERAL = {
    "ollama_url": "Ollama URL",
    "max_concurrent_jobs": "Concurrent training jobs",
    "import_size_limit_mb": "Import size limit (MB)",
}
_HYPERPARAMETERS = {
    "method": "Method",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "learning_rate": "Learning rate",
    "max_seq_length": "Max sequence length",
    "lora_r": "LoRA rank (r)",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "eval_fraction": "Validation fraction",
    "save_steps": "Checkpoint every N steps",
    "seed": "Seed",
}
# Settings the form does not show (the first-run flag): a save keeps their stored values.
_NOT_ON_FORM = frozenset(AppSettings.model_fields) - set(_GENERAL) - {"hyperparameters"}


class SettingsTab(QWidget):
    """Signals: `settings_saved(AppSettings)`, `status_message(str)` (its clusters panel's too)."""

    settings_saved = Signal(object)
    status_message = Signal(str)

    def __init__(self, context: AppContext, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self.editors: dict[str, QLineEdit | QComboBox] = {}
        self.errors: dict[str, QLabel] = {}
        self._tasks = AsyncTasks(self)
        self._build()
        self.show_settings(context.settings.load())

    def _build(self) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        general = QGroupBox("General")
        general_form = QFormLayout(general)
        for key, label in _GENERAL.items():
            self._add_row(general_form, key, label, AppSettings.model_fields[key].description)
        defaults = QGroupBox("Default hyperparameters for new jobs")
        defaults_form = QFormLayout(defaults)
        for key, label in _HYPERPARAMETERS.items():
            tip = Hyperparameters.model_fields[key].description
            self._add_row(defaults_form, f"hyperparameters.{key}", label, tip)
        layout.addWidget(general)
        layout.addWidget(defaults)
        layout.addLayout(self._build_buttons())
        # Its own buttons save at once: it stands below Save and Revert, which do not touch it.
        self.clusters_panel = ClustersPanel(self._context, self._runner)
        self.clusters_panel.status_message.connect(self.status_message)
        layout.addWidget(self.clusters_panel)
        layout.addStretch(1)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _build_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.on_save_button_clicked)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(
            lambda: self.show_settings(self._context.settings.load())
        )
        self.saved_label = QLabel()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.saved_label)
        buttons.addStretch(1)
        return buttons

    def _add_row(self, form: QFormLayout, key: str, label: str, tip: str | None) -> None:
        editor: QLineEdit | QComboBox
        if key == "hyperparameters.method":
            editor = QComboBox()
            editor.addItems(["lora", "qlora", "full"])
        else:
            editor = QLineEdit()
        editor.setToolTip(tip or "")
        error = QLabel()
        error.setStyleSheet(ERROR_STYLE)
        row = QHBoxLayout()
        row.addWidget(editor, 1)
        if key == "ollama_url":
            self.test_ollama_button = QPushButton("Test")
            self.test_ollama_button.setToolTip("Ask the server at this URL whether it is Ollama")
            self.test_ollama_button.clicked.connect(self.on_test_ollama_button_clicked)
            row.addWidget(self.test_ollama_button)
        row.addWidget(error, 1)
        form.addRow(label, row)
        self.editors[key] = editor
        self.errors[key] = error

    def show_settings(self, settings: AppSettings) -> None:
        values = flatten(settings.model_dump(mode="json"))
        for key, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                editor.setCurrentText(str(values[key]))
            else:
                editor.setText(str(values[key]))
            self.errors[key].clear()
            self.errors[key].setStyleSheet(ERROR_STYLE)

    def form_values(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hyperparameters": {}}
        for key, editor in self.editors.items():
            text = editor.currentText() if isinstance(editor, QComboBox) else editor.text().strip()
            if key.startswith("hyperparameters."):
                data["hyperparameters"][key.split(".", 1)[1]] = text
            else:
                data[key] = text
        return data

    def on_test_ollama_button_clicked(self) -> None:
        """Check the URL as typed (saved or not) against the server there."""
        label = self.errors["ollama_url"]
        try:
            from app.ollama.client import OllamaClient

            editor = self.editors["ollama_url"]
            assert isinstance(editor, QLineEdit)
            client = OllamaClient(editor.text().strip())
        except KnownError as error:
            self._show_test(error.message, ok=False)
            return
        label.setStyleSheet(ERROR_STYLE)
        label.setText("Testing…")
        self.test_ollama_button.setEnabled(False)

        async def probe() -> str:
            async with client:
                return await client.check()

        self._tasks.start(
            probe(),
            on_success=lambda version: self._show_test(
                f"Ollama {version} answers at {client.base_url}.", ok=True
            ),
            on_error=lambda failure: self._show_test(failure.message, ok=False),
            on_done=lambda: self.test_ollama_button.setEnabled(True),
        )

    def _show_test(self, text: str, *, ok: bool) -> None:
        label = self.errors["ollama_url"]
        label.setStyleSheet(_OK_STYLE if ok else ERROR_STYLE)
        label.setWordWrap(True)
        label.setText(text)

    def on_save_button_clicked(self) -> None:
        settings, errors = validate_settings(self.form_values())
        for key, label in self.errors.items():
            label.setStyleSheet(ERROR_STYLE)
            label.setText(errors.get(key, ""))
        if settings is None:
            self.saved_label.setText("Not saved: fix the fields marked in red.")
            return
        store = self._context.settings
        self.save_button.setEnabled(False)
        self._runner.submit(
            lambda _c: _save_form(store, settings),
            on_success=self._on_saved,
            on_error=self._on_save_failed,
        )

    def _on_saved(self, settings: AppSettings) -> None:
        self.save_button.setEnabled(True)
        self.saved_label.setText("Saved.")
        self.show_settings(settings)
        self.settings_saved.emit(settings)
        self.status_message.emit("Settings saved.")

    def _on_save_failed(self, failure: TaskFailure) -> None:
        self.save_button.setEnabled(True)
        self.saved_label.setText(failure.message)


def _save_form(store: SettingsStore, settings: AppSettings) -> AppSettings:
    """Save what the form edits; settings it does not show keep the values stored now."""
    stored = store.load()
    kept = {key: getattr(stored, key) for key in _NOT_ON_FORM}
    saved = settings.model_copy(update=kept)
    store.save(saved)
    return saved
