"""The Publish to Ollama dialog: a name, the base (suggested and checked against the job), how
(adapter or merged, with a quantisation), then Ollama's status lines as they come.

The whole publish (app.ollama.publish.Publisher) is one asyncio task on the qasync loop; Cancel
cancels it, which closes the stream to Ollama. Nothing here blocks the window.
"""

from __future__ import annotations

import html
import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.context import AppContext
from app.ollama.publish import BaseChoice, Publisher, PublishRequest, PublishResult
from app.workers.background import TaskFailure
from ui.async_tasks import AsyncTasks
from ui.ollama_connection import OllamaConnection

ROUTES = (
    ("auto", "Automatic: the adapter where Ollama takes it, else merged weights"),
    ("adapter", "LoRA adapter on the Ollama base (small, fast to publish)"),
    ("merged", "Merged full weights (any architecture)"),
)
QUANTISATIONS: tuple[tuple[str | None, str], ...] = (
    (None, "Keep the weights' precision"),
    ("q8_0", "q8_0 (half the size, near lossless)"),
    ("q4_K_M", "q4_K_M (a quarter of the size)"),
    ("q4_K_S", "q4_K_S (smallest)"),
    ("f16", "f16 (16-bit floats)"),
)


def suggested_name(job_name: str) -> str:
    """An Ollama-friendly name from the job's: lower case, '-' for anything else."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", job_name.casefold()).strip("-._")
    return (slug or "fine-tune")[:60]


class PublishDialog(QDialog):
    """published(PublishResult) when done; compare_requested(tuned, base) for the playground."""

    published = Signal(object)
    compare_requested = Signal(str, str)

    def __init__(
        self,
        context: AppContext,
        connection: OllamaConnection,
        job_id: str,
        job_name: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._connection = connection
        self._job_id = job_id
        self._tasks = AsyncTasks(self)
        self._choices: dict[str, BaseChoice] = {}
        self._publishing = False
        self.outcome: PublishResult | None = None
        self.setWindowTitle(f"Publish {job_name} to Ollama")
        self.resize(640, 520)
        self._build(job_name)
        self._load_choices()

    # --- layout ----------------------------------------------------------------------------

    def _build(self, job_name: str) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.name_edit = QLineEdit(suggested_name(job_name))
        self.name_edit.setToolTip("The model's name in Ollama, e.g. my-model or my-model:v1")
        self.base_combo = QComboBox(editable=True)
        self.base_combo.setToolTip(
            "The Ollama model the job was trained from; the adapter is layered on it"
        )
        self.base_combo.currentTextChanged.connect(self.on_base_combo_text_changed)
        self.base_note = QLabel(wordWrap=True)
        self.route_combo = QComboBox()
        for key, text in ROUTES:
            self.route_combo.addItem(text, key)
        self.quantize_combo = QComboBox()
        for quantisation, label in QUANTISATIONS:
            self.quantize_combo.addItem(label, quantisation)
        self.quantize_combo.setToolTip("Used when merged weights are imported")
        self.replace_check = QCheckBox("Replace a model of the same name")
        form.addRow("Name", self.name_edit)
        form.addRow("Base model", self.base_combo)
        form.addRow("", self.base_note)
        form.addRow("How", self.route_combo)
        form.addRow("Quantisation", self.quantize_combo)
        form.addRow("", self.replace_check)
        layout.addLayout(form)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.hide()
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setPlaceholderText("Ollama's progress appears here.")
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setStyleSheet("color: #b91c1c")
        self.error_label.hide()
        self.result_label = QLabel(wordWrap=True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.hide()
        for widget in (self.progress_bar, self.log_view, self.error_label, self.result_label):
            layout.addWidget(widget)
        layout.addLayout(self._build_buttons())

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.chat_button = QPushButton("Chat with it beside its base")
        self.chat_button.hide()
        self.chat_button.clicked.connect(self.on_chat_button_clicked)
        self.publish_button = QPushButton("Publish")
        self.publish_button.setDefault(True)
        self.publish_button.clicked.connect(self.on_publish_button_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        row.addWidget(self.chat_button)
        row.addStretch(1)
        row.addWidget(self.publish_button)
        row.addWidget(self.cancel_button)
        return row

    # --- the base ------------------------------------------------------------------------

    def _publisher(self) -> Publisher:
        return Publisher(
            self._connection.client,
            self._context.database,
            self._context.home,
            on_status=self.add_status_line,
        )

    def _load_choices(self) -> None:
        self.base_note.setText("Looking for matching base models in Ollama…")
        self._tasks.start(
            self._publisher().base_choices(self._job_id),
            on_success=self.show_choices,
            on_error=lambda failure: self.base_note.setText(failure.message),
        )

    def show_choices(self, choices: list[BaseChoice]) -> None:
        self._choices = {choice.name: choice for choice in choices}
        self.base_combo.clear()
        fitting = [c for c in choices if c.installed and c.fits]
        for choice in [*fitting, *[c for c in choices if c not in fitting]]:
            self.base_combo.addItem(choice.name)
        if not choices:
            self.base_note.setText(
                "No base model to suggest; type the Ollama model the job was trained from, or "
                "publish the merged weights."
            )
        self.on_base_combo_text_changed(self.base_combo.currentText())

    def on_base_combo_text_changed(self, name: str) -> None:
        name = name.strip()
        choice = self._choices.get(name) or self._choices.get(f"{name}:latest")
        if not name:
            text = "No base: the merged weights are published on their own."
        elif choice is None:
            text = "Checked against the job when you publish."
        elif not choice.installed:
            text = f"Ollama does not have {name} yet; pull it in the Models tab first."
        elif choice.problems:
            text = " ".join(choice.problems)
        else:
            how = "takes the adapter" if choice.adapter_supported else "takes merged weights only"
            text = f"Matches the job's base model; Ollama {how} on it."
        self.base_note.setText(text)

    # --- publishing ----------------------------------------------------------------------

    def request(self) -> PublishRequest:
        return PublishRequest(
            job_id=self._job_id,
            name=self.name_edit.text(),
            base=self.base_combo.currentText().strip() or None,
            quantize=self.quantize_combo.currentData(),
            route=self.route_combo.currentData(),
            replace=self.replace_check.isChecked(),
        )

    def on_publish_button_clicked(self) -> None:
        self._set_running(True)
        self.log_view.clear()
        self.error_label.hide()
        self._tasks.start(
            self._publisher().publish(self.request()),
            on_success=self.on_published,
            on_error=self.on_failed,
            on_done=lambda: self._set_running(False),
        )

    def add_status_line(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def on_published(self, result: PublishResult) -> None:
        self.outcome = result
        how = f"with its adapter on {result.base}" if result.route == "adapter" else "merged"
        reply = result.reply.strip() or "(an empty answer)"
        notes = "".join(f"<br>{note}" for note in result.notes)
        self.result_label.setText(
            f"<b>Published {result.name}</b> ({how}). Asked “Hello”, it answered: "
            f"<i>{html.escape(reply[:200])}</i>{notes}"
            f"<br>Try it: <code>ollama run {result.name}</code>"
        )
        self.result_label.show()
        self.chat_button.setVisible(result.base is not None)
        self.publish_button.hide()
        self.cancel_button.setText("Close")
        self.published.emit(result)

    def on_failed(self, failure: TaskFailure) -> None:
        self.error_label.setText(failure.message)
        self.error_label.show()

    def _set_running(self, running: bool) -> None:
        self._publishing = running
        self.progress_bar.setVisible(running)
        for widget in (
            self.name_edit,
            self.base_combo,
            self.route_combo,
            self.quantize_combo,
            self.replace_check,
            self.publish_button,
        ):
            widget.setEnabled(not running)

    def on_cancel_button_clicked(self) -> None:
        if self._publishing:
            self._tasks.cancel_all()  # the stream closes and the staging model is removed
            self.add_status_line("Cancelled.")
            return
        self.reject()

    def on_chat_button_clicked(self) -> None:
        if self.outcome is not None and self.outcome.base is not None:
            self.compare_requested.emit(self.outcome.name, self.outcome.base)
            self.accept()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._tasks.cancel_all()
        super().closeEvent(event)

    def done(self, result: int) -> None:
        self._tasks.cancel_all()
        super().done(result)
