"""The New Job dialog: dataset, base model, where it runs (this machine or a Ray cluster), method,
a preset with every field editable, a memory estimate, and Create, which queues the job through
the background runner.

It opens with `open()`; datasets, clusters, the memory estimate and the job's creation run on
the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.build_info import GUI_ONLY_NOTE, training_available
from app.context import AppContext
from app.datasets.repository import list_datasets
from app.db.models import Dataset, Job
from app.executors.bundle import cluster_code_available
from app.executors.clusters import Cluster, ClusterStore
from app.jobs.estimate import EstimateDevice, MemoryEstimate, estimate_memory, likely_device
from app.jobs.presets import PRESETS, matching_preset, preset_named
from app.jobs.service import NewJob, create_job, target_of
from app.jobs.spec import TrainingHyperparameters
from app.settings import AppSettings, Method, field_errors
from app.workers.background import TaskFailure, TaskRunner
from ui.clusters_panel import resources_text, target_text
from ui.dialogs import ERROR_STYLE
from ui.job_models import submit_for

_ESTIMATE_DELAY_MS = 300
THIS_MACHINE = "This machine"
CLUSTER_BUILD_NOTE = (
    "A job for a cluster cannot be queued from it either: this build carries no training code "
    "to send to a cluster."
)
DEFAULTS_ITEM = "Your defaults (Settings)"
CUSTOM_ITEM = "Custom"
METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA (4-bit)", "full": "Full fine-tuning"}
METHODS: dict[str, str] = {
    "lora": "LoRA: trains small adapter matrices beside the frozen model. Little memory; the "
    "result is a small adapter.",
    "qlora": "QLoRA: LoRA on a 4-bit copy of the model. The least memory; needs an NVIDIA GPU "
    "with CUDA.",
    "full": "Full fine-tuning: trains every weight. The most memory and time; the result is a "
    "whole model.",
}
# The fields of the form (keys of TrainingHyperparameters), in two groups.
TRAINING_FIELDS = {
    "epochs": "Epochs",
    "max_steps": "Max steps",
    "batch_size": "Batch size",
    "gradient_accumulation_steps": "Gradient accumulation",
    "learning_rate": "Learning rate",
    "warmup_ratio": "Warm-up share",
    "max_seq_length": "Max sequence length",
}
ADAPTER_FIELDS = {
    "lora_r": "LoRA rank (r)",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "eval_steps": "Evaluate every N steps",
    "save_steps": "Checkpoint every N steps",
    "seed": "Seed",
}
LORA_FIELDS = frozenset({"lora_r", "lora_alpha", "lora_dropout"})
_MORE = {
    "max_steps": "Leave empty to train for the whole number of epochs.",
    "learning_rate": "Too high and the loss jumps about or rises; too low and it barely falls.",
    "batch_size": "Larger batches give smoother steps but need more memory.",
    "gradient_accumulation_steps": "Splitting a batch saves memory at the same batch size.",
    "max_seq_length": "Memory grows with it; longer examples are cut, not dropped.",
    "lora_r": "Higher ranks can learn more and make a larger adapter.",
    "lora_alpha": "Usually twice the rank.",
    "eval_steps": "The evaluation loss, on the dataset's validation split, is drawn dashed.",
    "save_steps": "A cancelled or interrupted job resumes from its last checkpoint.",
    "seed": "The same seed and data give the same run.",
}


def field_tooltip(key: str) -> str:
    description = TrainingHyperparameters.model_fields[key].description or ""
    return f"{description} {_MORE.get(key, '')}".strip()


@dataclass(frozen=True)
class JobDraft:
    """What the dialog starts from when a job is duplicated: the same settings."""

    dataset_id: str | None
    base_model: str
    name: str
    hyperparameters: dict[str, Any]
    target: str | None = None  # the cluster it ran on; None: this machine

    @classmethod
    def from_job(cls, job: Job) -> JobDraft:
        hyperparameters = dict(job.spec.get("hyperparameters", {}))
        name, target = f"{job.name} (copy)", target_of(job.spec)
        return cls(job.dataset_id, job.base_model, name, hyperparameters, target)


class NewJobDialog(QDialog):
    """Signals: `job_created(Job)` once the job is queued (the dialog then closes)."""

    job_created = Signal(object)

    def __init__(
        self,
        context: AppContext,
        runner: TaskRunner,
        recent_models: list[str],
        draft: JobDraft | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._draft = draft
        self._defaults: dict[str, Any] = {}
        self._extra: dict[str, Any] = {}  # a duplicate's settings the form does not show
        self._clusters: dict[str, Cluster] = {}
        self._estimate_request = 0
        self._file_dialog: QFileDialog | None = None
        self.editors: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        self.loaded = False
        self.setWindowTitle("Duplicate job" if draft else "New training job")
        self.setMinimumWidth(720)
        self._estimate_timer = QTimer(self, singleShot=True, interval=_ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self.on_estimate_timer_timeout)
        self._build(recent_models)
        self._load()

    # --- layout ------------------------------------------------------------------------------

    def _build(self, recent_models: list[str]) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_choices(recent_models))
        groups = QHBoxLayout()
        groups.addWidget(self._build_group("Training", TRAINING_FIELDS))
        groups.addWidget(self._build_group("Adapter, evaluation and checkpoints", ADAPTER_FIELDS))
        layout.addLayout(groups)
        self.estimate_label = QLabel("Choose a base model to see how much memory it needs.")
        self.estimate_label.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        layout.addWidget(self.estimate_label)
        layout.addWidget(self.error_label)
        if not training_available():  # GUI-only: it can queue jobs for a cluster, nothing else
            self.build_note = QLabel(GUI_ONLY_NOTE)
            self.build_note.setWordWrap(True)
            self.build_note.setStyleSheet(ERROR_STYLE)
            layout.addWidget(self.build_note)
        layout.addWidget(self._build_buttons())

    def _build_choices(self, recent_models: list[str]) -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name_edit = QLineEdit(placeholderText="Optional; the dataset and method by default")
        self.dataset_combo = QComboBox()
        self.dataset_combo.setPlaceholderText("Loading datasets…")
        self.dataset_combo.setToolTip("The records to train on, with their validation split")
        self.dataset_combo.currentIndexChanged.connect(self.on_form_changed)
        self.dataset_hint = QLabel()
        self.dataset_hint.setWordWrap(True)
        self.dataset_hint.hide()
        dataset = QVBoxLayout()
        dataset.addWidget(self.dataset_combo)
        dataset.addWidget(self.dataset_hint)
        form.addRow("Name", self.name_edit)
        form.addRow("Dataset", dataset)
        form.addRow("Base model", self._build_base_model(recent_models))
        form.addRow("Run on", self._build_run_on())
        form.addRow("", self.run_on_hint)
        self.method_combo = QComboBox()
        for method, tip in METHODS.items():
            self.method_combo.addItem(METHOD_NAMES[method], method)
            self.method_combo.setItemData(self.method_combo.count() - 1, tip, _TOOLTIP)
        self.method_combo.currentIndexChanged.connect(self.on_method_combo_changed)
        form.addRow("Method", self.method_combo)
        form.addRow("Preset", self._build_presets())
        return form

    def _build_base_model(self, recent_models: list[str]) -> QWidget:
        self.base_model_combo = QComboBox(editable=True)
        self.base_model_combo.addItems(recent_models)
        self.base_model_combo.setCurrentIndex(-1)
        line = self.base_model_combo.lineEdit()
        assert line is not None  # an editable combo box has one
        line.setPlaceholderText("A Hugging Face id (org/name), a model folder or a .gguf file")
        line.textChanged.connect(self.on_form_changed)
        self.base_model_combo.setToolTip(
            "The model to fine-tune. Recently used ones are in the list."
        )
        folder_button = QPushButton("Folder…")
        folder_button.setToolTip("A local model folder with config.json and its weights")
        folder_button.clicked.connect(self.on_folder_button_clicked)
        gguf_button = QPushButton("GGUF file…")
        gguf_button.setToolTip("A .gguf file; it is converted to a trainable model once")
        gguf_button.clicked.connect(self.on_gguf_button_clicked)
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.base_model_combo, 1)
        box.addWidget(folder_button)
        box.addWidget(gguf_button)
        return row

    def _build_run_on(self) -> QComboBox:
        self.run_on_combo = QComboBox()
        self.run_on_combo.addItem(THIS_MACHINE, None)
        self.run_on_combo.setToolTip(
            "Where the job trains: this machine, or a Ray cluster added in Settings, Clusters"
        )
        self.run_on_combo.currentIndexChanged.connect(self.on_run_on_combo_changed)
        self.run_on_hint = QLabel(wordWrap=True)
        self.run_on_hint.hide()
        return self.run_on_combo

    def _build_presets(self) -> QWidget:
        self.preset_combo = QComboBox()
        self.preset_combo.addItem(DEFAULTS_ITEM)
        for preset in PRESETS:
            self.preset_combo.addItem(preset.name)
            self.preset_combo.setItemData(
                self.preset_combo.count() - 1, preset.description, _TOOLTIP
            )
        self.preset_combo.addItem(CUSTOM_ITEM)
        self.preset_combo.activated.connect(self.on_preset_combo_activated)
        self.preset_hint = QLabel()
        self.preset_hint.setWordWrap(True)
        row = QWidget()
        box = QVBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.preset_combo)
        box.addWidget(self.preset_hint)
        return row

    def _build_group(self, title: str, names: dict[str, str]) -> QGroupBox:
        group = QGroupBox(title)
        form = QFormLayout(group)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, label in names.items():
            editor = QLineEdit()
            editor.setToolTip(field_tooltip(key))
            editor.textEdited.connect(self.on_field_edited)
            error = QLabel()
            error.setStyleSheet(ERROR_STYLE)
            error.setWordWrap(True)
            error.hide()  # shown with a message
            cell = QVBoxLayout()
            cell.setSpacing(0)
            cell.addWidget(editor)
            cell.addWidget(error)
            form.addRow(label, cell)
            self.editors[key], self.errors[key] = editor, error
        self.editors["max_steps"].setPlaceholderText("all epochs")
        return group

    def _build_buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.create_button = QPushButton("Queue job")
        self.create_button.setDefault(True)
        self.create_button.setEnabled(False)
        self.create_button.clicked.connect(self.on_create_button_clicked)
        buttons.addButton(self.create_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        return buttons

    # --- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        database, settings = self._context.database, self._context.settings
        submit_for(
            self,
            self._runner,
            lambda _c: (list_datasets(database), settings.load(), ClusterStore(database).all()),
            on_success=self.on_load_succeeded,
            on_error=self.on_load_failed,
        )

    def on_load_succeeded(self, result: tuple[list[Dataset], AppSettings, list[Cluster]]) -> None:
        datasets, settings, clusters = result
        self._fill_datasets(datasets)
        self._fill_clusters(clusters)
        defaults = TrainingHyperparameters().model_dump()
        self._defaults = {**defaults, **settings.hyperparameters.model_dump()}
        values = dict(self._defaults)
        if self._draft is not None:
            self._apply_draft(self._draft, values)
        self.show_values(values)
        if self._draft is not None and self._draft.target is not None:
            self._apply_target(self._draft.target)
        self.loaded = True
        self.on_form_changed()

    def on_load_failed(self, failure: TaskFailure) -> None:
        self.error_label.setText(failure.message)

    def _fill_datasets(self, datasets: list[Dataset]) -> None:
        self.dataset_combo.setPlaceholderText("No dataset yet")
        for dataset in datasets:
            split = f", {dataset.validation_rows:,} held out" if dataset.validation_rows else ""
            self.dataset_combo.addItem(f"{dataset.name} ({dataset.rows:,} records{split})")
            self.dataset_combo.setItemData(self.dataset_combo.count() - 1, dataset.id)
        if not datasets:
            self._hint("Import a dataset in the Datasets tab first (Ctrl+O): a job trains on one.")
        else:
            self.dataset_combo.setCurrentIndex(0)

    def _fill_clusters(self, clusters: list[Cluster]) -> None:
        self._clusters = {cluster.name: cluster for cluster in clusters}
        for cluster in clusters:
            text = f"{cluster.name}: {cluster.url} ({resources_text(cluster)} a job)"
            self.run_on_combo.addItem(text, cluster.name)

    def _apply_draft(self, draft: JobDraft, values: dict[str, Any]) -> None:
        self.name_edit.setText(draft.name)
        self.base_model_combo.setCurrentText(draft.base_model)
        shown = TRAINING_FIELDS.keys() | ADAPTER_FIELDS.keys() | {"method"}
        values.update({k: v for k, v in draft.hyperparameters.items() if k in shown})
        self._extra = {k: v for k, v in draft.hyperparameters.items() if k not in shown}
        row = self.dataset_combo.findData(draft.dataset_id) if draft.dataset_id else -1
        self.dataset_combo.setCurrentIndex(row)
        if row < 0:
            self._hint("The original job's dataset is gone: choose another one.")

    def _apply_target(self, target: str) -> None:
        """The original job's cluster, after the method (whose change redescribes it)."""
        place = self.run_on_combo.findData(target)
        self.run_on_combo.setCurrentIndex(max(place, 0))
        if place < 0:
            self._show_run_on_hint(
                f"The original job's cluster {target} is gone: it runs on this machine unless "
                "you choose another."
            )

    def _hint(self, text: str) -> None:
        self.dataset_hint.setText(text)
        self.dataset_hint.show()

    def show_values(self, values: dict[str, Any]) -> None:
        """Put hyperparameter values (and the method, if given) in the form."""
        if "method" in values:
            self.method_combo.setCurrentIndex(self.method_combo.findData(values["method"]))
        for key, editor in self.editors.items():
            if key in values:
                editor.setText("" if values[key] is None else str(values[key]))
        self._show_matching_preset()

    # --- reacting to the user ----------------------------------------------------------------

    @property
    def method(self) -> Method:
        method: Method = self.method_combo.currentData() or "lora"
        return method

    def on_method_combo_changed(self, _index: int) -> None:
        for key in LORA_FIELDS:
            self.editors[key].setEnabled(self.method != "full")
        self._describe_target()
        if self.preset_combo.currentText() in {p.name for p in PRESETS}:
            self.on_preset_combo_activated(self.preset_combo.currentIndex())
        self.on_form_changed()

    def on_preset_combo_activated(self, index: int) -> None:
        name = self.preset_combo.itemText(index)
        if name == DEFAULTS_ITEM:
            self.show_values({k: v for k, v in self._defaults.items() if k != "method"})
        elif name != CUSTOM_ITEM:
            self.show_values(preset_named(name).values_for(self.method))
        self.on_form_changed()

    @property
    def target(self) -> str | None:
        """The chosen cluster's name; None: this machine."""
        data = self.run_on_combo.currentData()
        return data if isinstance(data, str) else None

    @property
    def cluster(self) -> Cluster | None:
        return self._clusters.get(self.target or "")

    def can_queue(self) -> bool:
        """Whether this build can run the job where it is to run: the GUI-only build has no
        trainer of its own, but it carries the training code a cluster job runs."""
        return training_available() or (self.cluster is not None and cluster_code_available())

    def on_run_on_combo_changed(self, _index: int) -> None:
        self._describe_target()
        if not training_available():
            note = f"{GUI_ONLY_NOTE} {CLUSTER_BUILD_NOTE}" if self.cluster else GUI_ONLY_NOTE
            self.build_note.setText(note)
            self.build_note.setVisible(not self.can_queue())
        self.on_form_changed()

    def _describe_target(self) -> None:
        self._show_run_on_hint(target_text(self.cluster, self.method) if self.cluster else "")

    def _show_run_on_hint(self, text: str) -> None:
        self.run_on_hint.setText(text)
        self.run_on_hint.setVisible(bool(text))
        layout = self.layout()
        # A wrapped label's lines do not count in the dialog's minimum size: grow to fit them.
        needed = layout.totalHeightForWidth(self.width()) if layout is not None else 0
        if self.isVisible() and needed > self.height():
            self.resize(self.width(), needed)

    def on_field_edited(self, _text: str) -> None:
        self._show_matching_preset()
        self.on_form_changed()

    def _show_matching_preset(self) -> None:
        name, hint = CUSTOM_ITEM, "Your own values; choose a preset to start again from it."
        typed = self._typed_values()
        preset = matching_preset(typed, self.method) if typed else None
        if preset is not None:
            name, hint = preset.name, preset.description
        elif typed and all(typed[k] == self._defaults.get(k) for k in self.editors):
            name, hint = DEFAULTS_ITEM, "The defaults for new jobs, from the Settings tab."
        self.preset_combo.setCurrentText(name)
        self.preset_hint.setText(hint)

    def _typed_values(self) -> dict[str, Any] | None:
        """The form's values as numbers, or None while one of them is invalid."""
        try:
            merged = {**self._defaults, **self.job_values()}
            return TrainingHyperparameters.model_validate(merged).model_dump()
        except ValidationError:
            return None

    def on_form_changed(self, *_args: object) -> None:
        """Validate the form now, and estimate the memory once the typing pauses."""
        if not self.loaded:
            return
        errors = self.validate()
        ready = not errors and self.dataset_id is not None and bool(self.base_model)
        self.create_button.setEnabled(ready and self.can_queue())
        self._estimate_timer.start()

    def on_folder_button_clicked(self) -> None:
        self._open_file_dialog("Choose a model folder", QFileDialog.FileMode.Directory, "")

    def on_gguf_button_clicked(self) -> None:
        self._open_file_dialog(
            "Choose a GGUF model", QFileDialog.FileMode.ExistingFile, "GGUF models (*.gguf)"
        )

    def _open_file_dialog(self, title: str, mode: QFileDialog.FileMode, filters: str) -> None:
        dialog = QFileDialog(self, title, str(Path.home()), filters)
        dialog.setFileMode(mode)
        dialog.fileSelected.connect(self.base_model_combo.setCurrentText)
        self._file_dialog = dialog
        dialog.open()

    # --- values and validation ---------------------------------------------------------------

    @property
    def dataset_id(self) -> str | None:
        data = self.dataset_combo.currentData()
        return data if isinstance(data, str) else None

    @property
    def base_model(self) -> str:
        return self.base_model_combo.currentText().strip()

    def hyperparameters(self) -> dict[str, Any]:
        """The form's values as typed (pydantic converts them), with the method."""
        values: dict[str, Any] = {"method": self.method}
        for key, editor in self.editors.items():
            text = editor.text().strip()
            values[key] = None if key == "max_steps" and not text else text
        return values

    def job_values(self) -> dict[str, Any]:
        """What the job is created with: a duplicate's hidden settings, then the form's."""
        return {**self._extra, **self.hyperparameters()}

    def validate(self) -> dict[str, str]:
        """Check every field; show each problem beside its field and return them."""
        try:
            TrainingHyperparameters.model_validate({**self._defaults, **self.job_values()})
            errors: dict[str, str] = {}
        except ValidationError as error:
            errors = field_errors(error)
        if self.cluster is not None and _local_path(self.base_model):
            errors["base_model"] = (
                "A job on a cluster needs a Hugging Face id as its base model: the cluster "
                "cannot read files of this machine."
            )
        for key, label in self.errors.items():
            label.setText(errors.get(key, ""))
            label.setVisible(key in errors)
        general = [text for key, text in errors.items() if key not in self.errors]
        self.error_label.setText(" ".join(general))
        return errors

    # --- the memory estimate -----------------------------------------------------------------

    def on_estimate_timer_timeout(self) -> None:
        values = self._estimate_inputs()
        if values is None:
            return
        self._estimate_request += 1
        request = self._estimate_request
        base_model, method, cluster = self.base_model, self.method, self.cluster
        submit_for(
            self,
            self._runner,
            lambda _c: estimate_memory(
                base_model, method, device=_device(method, cluster), **values
            ),
            on_success=lambda estimate: self._show_estimate(request, estimate),
            on_error=lambda failure: self._show_estimate(request, failure),
        )

    def _estimate_inputs(self) -> dict[str, int] | None:
        keys = ("batch_size", "max_seq_length", "lora_r", "gradient_accumulation_steps")
        try:
            return {key: int(self.editors[key].text()) for key in keys}
        except ValueError:
            self.estimate_label.setText("The memory estimate needs whole numbers above.")
            return None

    def _show_estimate(self, request: int, result: MemoryEstimate | TaskFailure) -> None:
        if request != self._estimate_request:
            return  # the form changed since: a newer estimate is on its way
        cluster = self.cluster
        if isinstance(result, MemoryEstimate) and cluster is not None:
            self.estimate_label.setText(f"On {cluster.name}'s nodes: {result.sentence()}")
        elif isinstance(result, MemoryEstimate):
            self.estimate_label.setText(result.sentence())
        else:
            self.estimate_label.setText(f"No memory estimate: {result.message}")

    def done(self, result: int) -> None:
        self._estimate_timer.stop()
        super().done(result)

    # --- creating the job --------------------------------------------------------------------

    def on_create_button_clicked(self) -> None:
        dataset_id = self.dataset_id
        if self.validate() or dataset_id is None or not self.base_model:
            return
        new = NewJob(
            dataset=dataset_id,
            base_model=self.base_model,
            name=self.name_edit.text().strip() or None,
            hyperparameters=self.job_values(),
            target=self.target,
        )
        context = self._context
        self.create_button.setEnabled(False)
        self.error_label.setText("Queueing the job…")
        submit_for(
            self,
            self._runner,
            lambda _c: create_job(context.database, context.home, context.settings.load(), new),
            on_success=self.on_create_succeeded,
            on_error=self.on_create_failed,
        )

    def on_create_succeeded(self, job: Job) -> None:
        self.error_label.clear()
        self.job_created.emit(job)
        self.accept()

    def on_create_failed(self, failure: TaskFailure) -> None:
        self.error_label.setText(failure.message)
        self.create_button.setEnabled(True)


def _device(method: Method, cluster: Cluster | None) -> EstimateDevice:
    """Where the job will train: a cluster's GPUs, else this machine's likely device."""
    if cluster is None:
        return likely_device(method)
    return "cuda" if cluster.gpus > 0 or method == "qlora" else "cpu"


def _local_path(text: str) -> bool:
    """Whether the base model names a file or folder (which a cluster cannot read), not an id."""
    return text.startswith(("/", ".", "~")) or text.endswith(".gguf") or Path(text).is_absolute()


_TOOLTIP = Qt.ItemDataRole.ToolTipRole
