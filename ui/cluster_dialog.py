"""The dialog that adds or edits a Ray cluster (the Settings tab's Clusters section opens it).

The form is validated by app.executors.clusters.make_cluster, whose one sentence shows in the
dialog; saving (the database row, the token into the OS keyring) runs on the window's TaskRunner.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.executors.clusters import Cluster, ClusterStore, make_cluster
from app.executors.errors import BadClusterError
from app.executors.ray_client import insecure, normalise_url
from app.workers.background import TaskFailure, TaskRunner
from ui.dialogs import ERROR_STYLE, WARNING_STYLE
from ui.job_models import submit_for

FIELD_LABELS = {
    "name": "Name",
    "url": "Dashboard URL",
    "storage": "Storage",
    "token": "Token",
    "token_env": "Token variable",
    "gpus": "GPUs per job",
    "cpus": "CPUs per job",
}
FIELD_TIPS = {
    "name": "What a job's Run on names: letters, digits, '.', '_' or '-'.",
    "url": "The Ray dashboard, http(s)://head:8265.",
    "storage": "Where a job's dataset and results go: an absolute folder that this machine and "
    "every node of the cluster mount at the same path, or s3://bucket/prefix.",
    "token": "The token the head asks for, if any. It is kept in the OS keyring, never in the "
    "app's database.",
    "token_env": "An environment variable the token is read from when the OS keyring has none "
    "(on a machine without a keyring, set it wherever the app runs).",
    "gpus": "GPUs each job asks the cluster for (0: none).",
    "cpus": "CPUs each job asks the cluster for.",
}
INSECURE_TEXT = (
    "Its URL is plain http to another machine, so the token and data cross the network "
    "unencrypted; put an https proxy in front of the head."
)


@dataclass(frozen=True)
class ClusterSaved:
    """A cluster the dialog saved: whether a token was given, and whether the keyring took it."""

    cluster: Cluster
    token_given: bool
    kept: bool

    @property
    def warning(self) -> bool:
        return (self.token_given and not self.kept) or insecure(self.cluster.url)

    def note(self) -> str:
        name, variable = self.cluster.name, self.cluster.token_env
        if not self.token_given:
            text = f"Saved cluster {name}."
        elif self.kept:
            text = f"Saved cluster {name}; its token is in the OS keyring."
        elif variable:
            text = (
                f"Saved cluster {name}, but there is no OS keyring here to keep its token, so "
                f"it is read from ${variable} each time: set it wherever the app runs."
            )
        else:
            text = (
                f"Saved cluster {name}, but there is no OS keyring here to keep its token: "
                "edit the cluster to give a token environment variable, and set it wherever "
                "the app runs."
            )
        return f"{text} {INSECURE_TEXT}" if insecure(self.cluster.url) else text


class ClusterDialog(QDialog):
    """Adds a cluster (`cluster` None) or edits one; it closes once the cluster is saved.

    Signals: `saved(ClusterSaved)`.
    """

    saved = Signal(object)

    def __init__(
        self,
        store: ClusterStore,
        runner: TaskRunner,
        cluster: Cluster | None = None,
        taken: frozenset[str] = frozenset(),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._runner = runner
        self._cluster = cluster
        self._taken = taken
        self._saving = False
        self.setWindowTitle(f"Edit cluster {cluster.name}" if cluster else "Add a Ray cluster")
        self.setMinimumWidth(560)
        self._build()
        if cluster is not None:
            self._show(cluster)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name_edit = QLineEdit(placeholderText="e.g. lab-gpu")
        self.url_edit = QLineEdit(placeholderText="http://head:8265")
        self.url_edit.textChanged.connect(self.on_url_edit_text_changed)
        self.storage_edit = QLineEdit(placeholderText="/mnt/shared/mtm or s3://bucket/prefix")
        self.token_edit = QLineEdit(echoMode=QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText(
            "Leave empty to keep the current token" if self._cluster else "Optional"
        )
        self.token_env_edit = QLineEdit(placeholderText="Optional, e.g. RAY_TOKEN")
        self.gpus_spin = _spin("gpus")
        self.cpus_spin = _spin("cpus")
        for label, editor, tip in self._fields():
            editor.setToolTip(tip)
            form.addRow(label, editor)
            form.labelForField(editor).setToolTip(tip)
        self.url_warning = QLabel(INSECURE_TEXT, wordWrap=True)
        self.url_warning.setStyleSheet(WARNING_STYLE)
        self.url_warning.hide()
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        layout.addLayout(form)
        layout.addWidget(self.url_warning)
        layout.addWidget(self.error_label)
        layout.addWidget(self._build_buttons())

    def _fields(self) -> list[tuple[str, QWidget, str]]:
        editors: dict[str, QWidget] = {
            "name": self.name_edit,
            "url": self.url_edit,
            "storage": self.storage_edit,
            "token": self.token_edit,
            "token_env": self.token_env_edit,
            "gpus": self.gpus_spin,
            "cpus": self.cpus_spin,
        }
        editing = {"name": " It cannot change: remove the cluster and add it again."}
        editing["token"] = " Leave it empty to keep the current one."
        extra = editing if self._cluster is not None else {}
        return [
            (FIELD_LABELS[key], editor, FIELD_TIPS[key] + extra.get(key, ""))
            for key, editor in editors.items()
        ]

    def _build_buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.on_save_button_clicked)
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.rejected.connect(self.reject)
        return buttons

    def _show(self, cluster: Cluster) -> None:
        self.name_edit.setText(cluster.name)
        self.name_edit.setReadOnly(True)
        self.url_edit.setText(cluster.url)
        self.storage_edit.setText(cluster.storage)
        self.token_env_edit.setText(cluster.token_env or "")
        self.gpus_spin.setValue(cluster.gpus)
        self.cpus_spin.setValue(cluster.cpus)

    def values(self) -> dict[str, object]:
        """The form's fields as make_cluster takes them."""
        return {
            "name": self.name_edit.text().strip(),
            "url": self.url_edit.text().strip(),
            "storage": self.storage_edit.text().strip(),
            "token_env": self.token_env_edit.text().strip() or None,
            "gpus": self.gpus_spin.value(),
            "cpus": self.cpus_spin.value(),
        }

    def on_url_edit_text_changed(self, text: str) -> None:
        try:
            shown = insecure(normalise_url(text))
        except BadClusterError:
            shown = False  # an invalid URL is told on Save
        self.url_warning.setVisible(shown)

    def on_save_button_clicked(self) -> None:
        try:
            cluster = make_cluster(**self.values())
        except BadClusterError as error:
            self.error_label.setText(error.message)
            return
        if self._cluster is None and cluster.name in self._taken:
            self.error_label.setText(
                f"There is already a cluster named {cluster.name}; choose another name, or "
                "edit that one."
            )
            return
        token = self.token_edit.text().strip() or None
        store = self._store
        self._saving = True
        self.save_button.setEnabled(False)
        self.error_label.clear()
        submit_for(
            self,
            self._runner,
            lambda _c: store.add(cluster, token),
            on_success=lambda kept: self._on_saved(ClusterSaved(cluster, token is not None, kept)),
            on_error=self._on_save_failed,
        )

    def _on_saved(self, saved: ClusterSaved) -> None:
        self._saving = False
        self.saved.emit(saved)
        self.accept()

    def _on_save_failed(self, failure: TaskFailure) -> None:
        self._saving = False
        self.save_button.setEnabled(True)
        self.error_label.setText(failure.message)

    def reject(self) -> None:
        if not self._saving:  # a save under way ends in the panel, which needs its answer
            super().reject()


def _spin(name: str) -> QDoubleSpinBox:
    """A spin box for the Cluster field `name`, within the field's bounds, at its default."""
    import annotated_types

    field = Cluster.model_fields[name]
    bounds = [item.le for item in field.metadata if isinstance(item, annotated_types.Le)]
    limit = bounds[0] if bounds and isinstance(bounds[0], int | float) else 1024
    spin = QDoubleSpinBox(decimals=2, singleStep=1.0)
    spin.setRange(0, float(limit))
    spin.setValue(float(field.default))
    return spin
