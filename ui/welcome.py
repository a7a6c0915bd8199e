"""The first-run panel: whether Ollama answers, what this machine can train on, where the data
lives, and one click that imports a sample dataset and queues a Quick test job on the smallest
base model found here.

A non-modal dialog (the window works beside it), opened by the window on its first launch and
from Help → Welcome. Everything slow runs elsewhere: the hardware probe is a child process, the
model search and the import run on the window's TaskRunner, Ollama on the qasync loop.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import APP_NAME
from app.context import AppContext
from app.datasets.import_process import import_in_child
from app.datasets.importer import ImportCancelled
from app.db.models import Dataset, Job
from app.hardware import HardwareReport, gib, size_text
from app.jobs.base_models import BaseModelCandidate, smallest_base_model
from app.jobs.presets import QUICK_TEST
from app.jobs.service import NewJob, create_job
from app.paths import resource_path
from app.settings import SettingsStore
from app.workers.background import TaskCancelled, TaskContext, TaskFailure, TaskRunner
from ui.datasets_tab import default_import_options
from ui.dialogs import ERROR_STYLE
from ui.hardware_info import HardwareInfo
from ui.icons import app_icon
from ui.ollama_connection import OllamaConnection, OllamaState

SAMPLE_FILE = "samples/getting-started.jsonl"
SAMPLE_NAME = "Sample: getting started"
SAMPLE_RECORDS = 40  # a test keeps this and the file in step
_DOT = "<span style='color:{}'>●</span>&nbsp;"
_GREEN, _AMBER, _RED, _GREY = "#16a34a", "#d97706", "#dc2626", "#9ca3af"
NO_MODEL = (
    "No base model was found on this machine: after the import, choose one (a Hugging Face "
    "id, a model folder or a .gguf file) in Jobs → New job…."
)


@dataclass(frozen=True)
class QuickStart:
    """What the one-click action made: the sample dataset, and its job where a model was found."""

    dataset: Dataset
    job: Job | None


class WelcomeDialog(QDialog):
    """Signals: `dataset_imported(Dataset)`, `job_queued(Job)`, `settings_requested()`,
    `user_guide_requested()`."""

    dataset_imported = Signal(object)
    job_queued = Signal(object)
    settings_requested = Signal()
    user_guide_requested = Signal()

    def __init__(
        self,
        context: AppContext,
        runner: TaskRunner,
        ollama: OllamaConnection,
        hardware: HardwareInfo,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._ollama = ollama
        self._hardware = hardware
        self.base_model: BaseModelCandidate | None = None
        self._starting = False  # the one click is under way: the button stays off meanwhile
        self.setWindowTitle(f"Welcome to {APP_NAME}")
        self.setModal(False)
        self._build()
        ollama.state_changed.connect(self.show_ollama_state)
        hardware.answered.connect(self.show_hardware)
        self.refresh()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(22, 18, 22, 14)
        layout.setSpacing(18)
        layout.addLayout(self._build_header())
        layout.addLayout(self._build_sections())
        layout.addStretch(1)
        layout.addWidget(self._build_buttons())
        self.setMinimumWidth(680)

    def _build_header(self) -> QHBoxLayout:
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(56, 56))
        title = QLabel(f"Welcome to {APP_NAME}")
        title.setStyleSheet("font-size: 15pt; font-weight: 600;")
        subtitle = QLabel(
            "Fine-tune language models on this machine and publish them to Ollama. "
            "This is what the app found here."
        )
        subtitle.setWordWrap(True)
        text = QVBoxLayout()
        text.setSpacing(4)
        text.addWidget(title)
        text.addWidget(subtitle)
        row = QHBoxLayout()
        row.setSpacing(14)
        row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(text, 1)
        return row

    def _build_sections(self) -> QGridLayout:
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(12)
        grid.setColumnStretch(1, 1)
        self.ollama_label = self._add_section(grid, 0, "Ollama")
        self.ollama_label.linkActivated.connect(self.on_ollama_label_link_activated)
        self.hardware_label = self._add_section(grid, 1, "This machine")
        self.folder_label = self._add_section(grid, 2, "Data folder")
        self.try_label = self._add_section(grid, 3, "Try it")
        grid.addLayout(self._build_try_row(), 4, 1)
        self.folder_label.setText(_folder_text(str(self._context.home.root)))
        return grid

    @staticmethod
    def _add_section(grid: QGridLayout, row: int, title: str) -> QLabel:
        heading = QLabel(f"<b>{title}</b>")
        text = QLabel()
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        grid.addWidget(heading, row, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(text, row, 1)
        return text

    def _build_try_row(self) -> QVBoxLayout:
        self.quick_start_button = QPushButton("Import the sample and queue a Quick test")
        self.quick_start_button.setEnabled(False)
        self.quick_start_button.clicked.connect(self.on_quick_start_button_clicked)
        self.quick_start_label = QLabel()
        self.quick_start_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.quick_start_button)
        row.addStretch(1)
        column = QVBoxLayout()
        column.addLayout(row)
        column.addWidget(self.quick_start_label)
        return column

    def _build_buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        guide = buttons.addButton("User guide", QDialogButtonBox.ButtonRole.HelpRole)
        guide.clicked.connect(self.on_guide_button_clicked)
        buttons.rejected.connect(self.reject)
        return buttons

    def on_guide_button_clicked(self) -> None:
        self.user_guide_requested.emit()

    def on_ollama_label_link_activated(self, _link: str) -> None:
        self.settings_requested.emit()

    # --- what was found ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Show what is known now and ask again for the rest (the hardware is asked once)."""
        self.show_ollama_state(self._ollama.state)
        self.hardware_label.setText(f"{_DOT.format(_GREY)}Checking the CPU, memory and GPUs…")
        self._hardware.request()
        if not self._starting:
            self._say("")
        self._find_base_model()

    def show_ollama_state(self, state: OllamaState | None) -> None:
        self.ollama_label.setText(ollama_text(state, self._ollama.url))

    def show_hardware(self, answer: HardwareReport | str) -> None:
        if isinstance(answer, str):
            self.hardware_label.setText(f"{_DOT.format(_AMBER)}{html.escape(answer)}")
        else:
            self.hardware_label.setText(hardware_text(answer))

    def _find_base_model(self) -> None:
        self.try_label.setText("Looking for a base model on this machine…")
        database = self._context.database
        self._runner.submit(
            lambda _context: smallest_base_model(database),
            on_success=self.show_base_model,
            on_error=lambda failure: self._show_no_base_model(failure.message),
        )

    def show_base_model(self, candidate: BaseModelCandidate | None) -> None:
        self.base_model = candidate
        if candidate is None:
            self._show_no_base_model(NO_MODEL)
            return
        self.try_label.setText(
            f"Import a {SAMPLE_RECORDS}-record sample dataset (questions and answers about "
            f"this app) and queue a <i>{QUICK_TEST.name}</i> job of "
            f"{QUICK_TEST.values['max_steps']} LoRA steps on <b>{html.escape(candidate.label)}"
            f"</b>, the smallest base model found here ({size_text(candidate.size_bytes)}, from "
            f"{candidate.source}). It takes minutes, even on a CPU."
        )
        self.quick_start_button.setText("Import the sample and queue a Quick test")
        self.quick_start_button.setToolTip(candidate.base_model)
        self.quick_start_button.setEnabled(not self._starting)

    def _show_no_base_model(self, sentence: str) -> None:
        self.base_model = None
        self.try_label.setText(html.escape(sentence))
        self.quick_start_button.setText("Import the sample dataset")
        self.quick_start_button.setToolTip(sentence)
        self.quick_start_button.setEnabled(not self._starting)

    # --- the one click -----------------------------------------------------------------------

    def on_quick_start_button_clicked(self) -> None:
        """Import the sample in a child process (as the Datasets tab does), then queue the job."""
        self._starting = True
        self.quick_start_button.setEnabled(False)
        self._say("Importing the sample dataset…")
        context, candidate = self._context, self.base_model
        self._runner.submit(
            lambda task: quick_start(context, candidate, task),
            on_success=self.on_quick_start_succeeded,
            on_error=self.on_quick_start_failed,
        )

    def on_quick_start_succeeded(self, result: QuickStart) -> None:
        self._starting = False
        self.dataset_imported.emit(result.dataset)
        if result.job is None:  # the button stays off: a second click would import it twice
            self._say(f"Imported {result.dataset.name}. {NO_MODEL}")
            return
        self._say(f"Queued {result.job.name}; the Jobs tab shows it training.")
        self.job_queued.emit(result.job)
        self.accept()  # the Jobs tab, behind, is where things happen now

    def on_quick_start_failed(self, failure: TaskFailure) -> None:
        self._starting = False
        self.quick_start_button.setEnabled(True)
        if not failure.cancelled:
            self._say(failure.message, error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.quick_start_label.setStyleSheet(ERROR_STYLE if error else "")
        self.quick_start_label.setText(text)


def quick_start(
    context: AppContext, candidate: BaseModelCandidate | None, task: TaskContext
) -> QuickStart:
    """On the runner: the sample imported through the import child, then its Quick test queued."""
    settings = context.settings.load()
    options = default_import_options(settings, name=SAMPLE_NAME)
    try:
        dataset = import_in_child(
            context.database,
            context.home,
            resource_path(SAMPLE_FILE),
            options,
            cancelled=task.cancelled,
        )
    except ImportCancelled as cancelled:
        raise TaskCancelled from cancelled
    if candidate is None:
        return QuickStart(dataset, None)
    # LoRA whatever the defaults say: QLoRA needs CUDA and full training is not a quick test.
    values = {**QUICK_TEST.values_for("lora"), "method": "lora"}
    new = NewJob(dataset.id, candidate.base_model, f"Quick test · {candidate.label}", values)
    return QuickStart(dataset, create_job(context.database, context.home, settings, new))


def mark_welcome_shown(store: SettingsStore) -> None:
    """On the runner: the panel does not open by itself again (Help → Welcome still opens it)."""
    store.save(store.load().model_copy(update={"welcome_shown": True}))


def ollama_text(state: OllamaState | None, url: str) -> str:
    """One sentence on Ollama: its version, or what to do to get it answering."""
    where = html.escape(url)
    if state is None:
        return f"{_DOT.format(_GREY)}Checking whether Ollama answers at {where}…"
    if state.connected:
        return f"{_DOT.format(_GREEN)}Ollama {html.escape(state.version or '')} answers at {where}."
    if state.too_old:
        return f"{_DOT.format(_AMBER)}{html.escape(state.message)}"
    return (
        f"{_DOT.format(_RED)}Ollama does not answer at {where}: start it with "
        "<code>ollama serve</code> (install it from ollama.com first), or set its URL in "
        "<a href='settings'>Settings</a>."
    )


def hardware_text(report: HardwareReport) -> str:
    colour = _GREEN if report.cuda or report.mps else _AMBER
    torch = f"torch {report.torch}" if report.torch else "torch not installed (GUI-only build)"
    return (
        f"{_DOT.format(colour)}{report.cpu_cores} CPU cores, {gib(report.memory_bytes)} memory; "
        f"{html.escape(report.accelerator)}.<br><span style='color:#6b7280'>{torch}</span>"
    )


def _folder_text(root: str) -> str:
    return (
        f"<code>{html.escape(root)}</code><br>Datasets, jobs, checkpoints and logs live here. "
        f"To use another folder, start the app with {_nowrap('--home DIR')} or set "
        f"{_nowrap('MTM_HOME')} (the Settings tab does not move it)."
    )


def _nowrap(code: str) -> str:
    return f"<nobr><code>{html.escape(code)}</code></nobr>"
