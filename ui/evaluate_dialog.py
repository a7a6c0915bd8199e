"""The Evaluate dialog: a published job's validation examples through its base and the fine-tune,
side by side, with their scores.

The run is `app.ollama.evaluate.evaluate`, an asyncio task on the qasync loop (ui.async_tasks);
the publications, the past runs and a past run's answers are read on the TaskRunner, never on the
GUI thread. A run that is cancelled (or closed) stores nothing: the core stores a run only when it
finished. The dialog opens with `open()`.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
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
from app.db.models import Evaluation, Job, Publication
from app.jobs.service import get_job
from app.ollama.evaluate import (
    EvaluationReport,
    ExampleResult,
    Scores,
    evaluate,
    list_evaluations,
    load_report,
)
from app.ollama.publish import publications
from app.workers.background import TaskFailure, TaskRunner
from ui.async_tasks import AsyncTasks
from ui.dialogs import ERROR_STYLE
from ui.job_models import format_time, submit_for
from ui.ollama_connection import OllamaConnection
from ui.playground import model_combo

Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_CENTRE = int(Qt.AlignmentFlag.AlignCenter)
_TITLE_STYLE = "font-weight: bold;"
_MATCH_COLOURS = {True: QColor("#1e8e3e"), False: QColor("#c5221f")}
_WHITESPACE = re.compile(r"\s+")
_CELL_CHARACTERS = 160  # the view elides to the column's width; this only bounds the work
_TOOLTIP_CHARACTERS = 1500  # per message: a tooltip is a glance, the boxes below show it all

DEFAULT_EXAMPLES = 20
DEFAULT_MAX_TOKENS = 256
CANCELLED_TEXT = "Cancelled; nothing was stored."


# --- formatting ----------------------------------------------------------------------------------


def one_line(text: str, limit: int = _CELL_CHARACTERS) -> str:
    """`text` on one line (whitespace collapsed), cut with an ellipsis past `limit` characters."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def last_user_message(result: ExampleResult) -> str:
    """What the models were asked last: the last user (or tool) turn of the conversation."""
    messages = result.example.messages
    asked = [m for m in messages if m.role in ("user", "tool")]
    return (asked or list(messages))[-1].content if messages else ""


def conversation_tooltip(result: ExampleResult) -> str:
    """The whole conversation as rich text (so that the tooltip wraps), each turn by its role."""
    turns = [
        f"<b>{html.escape(m.role)}</b>: {_tooltip_text(m.content)}" for m in result.example.messages
    ]
    return "<qt>" + "<br><br>".join(turns) + "</qt>"


def _tooltip_text(text: str) -> str:
    cut = text if len(text) <= _TOOLTIP_CHARACTERS else text[: _TOOLTIP_CHARACTERS - 1] + "…"
    return html.escape(cut).replace("\n", "<br>")


def answer_tooltip(text: str, done_reason: str | None) -> str:
    note = "<br><i>Cut off at the max-tokens limit.</i>" if done_reason == "length" else ""
    return f"<qt>{_tooltip_text(text)}{note}</qt>"


def match_mark(exact: bool) -> str:
    return "✓" if exact else "✗"


def format_share(value: float | int | None) -> str:
    return "–" if value is None else f"{float(value):.0%}"


def format_f1(value: float | int | None) -> str:
    return "–" if value is None else f"{float(value):.2f}"


def format_speed(value: float | int | None) -> str:
    return "not reported" if value is None else f"{float(value):,.1f}"


def summary_text(scores: Scores) -> str:
    """The scores of a run on one line: each figure as base vs fine-tuned."""
    count = int(scores.get("examples") or 0)
    return " · ".join(
        [
            _pair(scores, "Exact match", "exact_match", format_share),
            _pair(scores, "token F1", "token_f1", format_f1),
            _pair(scores, "tokens/s", "tokens_per_second", format_speed),
            f"{count:,} example{'' if count == 1 else 's'}",
        ]
    )


def _pair(scores: Scores, name: str, key: str, show: Callable[[float | int | None], str]) -> str:
    base, tuned = show(scores.get(f"{key}_base")), show(scores.get(f"{key}_tuned"))
    return f"{name}: base {base} vs fine-tuned {tuned}"


def run_description(report: EvaluationReport) -> str:
    """Which models a run compared, and with which settings."""
    options = report.options
    settings = [
        f"seed {options['seed']}" if "seed" in options else "",
        f"up to {options['num_predict']:,} tokens an answer" if "num_predict" in options else "",
        f"context {options['num_ctx']:,}" if "num_ctx" in options else "",
    ]
    shown = ", ".join(s for s in settings if s)
    text = f"{report.tuned_model} (fine-tuned) against {report.base_model} (base)"
    return f"{text}; {shown}." if shown else f"{text}."


def past_run_label(evaluation: Evaluation) -> str:
    scores = evaluation.scores or {}
    return (
        f"{format_time(evaluation.created_at)} · {evaluation.tuned_model} vs "
        f"{evaluation.base_model} · {evaluation.examples:,} examples · exact match "
        f"{format_share(scores.get('exact_match_base'))} vs "
        f"{format_share(scores.get('exact_match_tuned'))}"
    )


# --- the table -----------------------------------------------------------------------------------


class EvaluationTableModel(QAbstractTableModel):
    """One row per example of a run: the prompt, the reference, both answers and their scores."""

    HEADERS = (
        "#",
        "Prompt",
        "Reference",
        "Base answer",
        "Fine-tuned answer",
        "EM base",
        "EM tuned",
        "F1 base",
        "F1 tuned",
    )
    TEXT_COLUMNS = frozenset({1, 2, 3, 4})
    MATCH_COLUMNS = frozenset({5, 6})
    F1_COLUMNS = frozenset({7, 8})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._results: list[ExampleResult] = []

    def set_results(self, results: Sequence[ExampleResult]) -> None:
        self.beginResetModel()
        self._results = list(results)
        self.endResetModel()

    def result_at(self, row: int) -> ExampleResult | None:
        return self._results[row] if 0 <= row < len(self._results) else None

    def results(self) -> list[ExampleResult]:
        return list(self._results)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._results)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.HEADERS):
            return None
        if role == _DISPLAY:
            return self.HEADERS[section]
        if role == _TOOLTIP:
            return _HEADER_TIPS.get(section)
        return None

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        result = self.result_at(index.row()) if index.isValid() else None
        if result is None:
            return None
        column = index.column()
        if role == _DISPLAY:
            return cell_text(result, index.row(), column)
        if role == SORT_ROLE:
            return sort_key(result, index.row(), column)
        if role == _TOOLTIP:
            return cell_tooltip(result, column)
        return self._look(result, column, role)

    def _look(self, result: ExampleResult, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if column in self.MATCH_COLUMNS:
                return _CENTRE
            if column == 0 or column in self.F1_COLUMNS:
                return _RIGHT
        if role == Qt.ItemDataRole.ForegroundRole and column in self.MATCH_COLUMNS:
            return _MATCH_COLOURS[_exact(result, column)]
        return None


_HEADER_TIPS = {
    0: "The example's place in the run; its tooltip gives the record in the dataset",
    1: "The last user message of the conversation; the tooltip shows all of it",
    2: "The answer in the dataset (the last assistant turn)",
    5: "Exact match of the base's answer (case and spacing aside)",
    6: "Exact match of the fine-tune's answer (case and spacing aside)",
    7: "Token F1 of the base's answer against the reference (SQuAD-style), 0 to 1",
    8: "Token F1 of the fine-tune's answer against the reference (SQuAD-style), 0 to 1",
}


def _exact(result: ExampleResult, column: int) -> bool:
    return result.base_exact if column == 5 else result.tuned_exact


def _texts(result: ExampleResult) -> tuple[str, str, str, str]:
    return (
        last_user_message(result),
        result.example.reference,
        result.base.text,
        result.tuned.text,
    )


def cell_text(result: ExampleResult, row: int, column: int) -> str:
    """The text of one cell."""
    if column == 0:
        return str(row + 1)
    if column in EvaluationTableModel.TEXT_COLUMNS:
        return one_line(_texts(result)[column - 1])
    if column in EvaluationTableModel.MATCH_COLUMNS:
        return match_mark(_exact(result, column))
    return format_f1(result.base_f1 if column == 7 else result.tuned_f1)


def sort_key(result: ExampleResult, row: int, column: int) -> Any:
    """What a column sorts by: the place and the scores as numbers, texts case-blind."""
    if column == 0:
        return row
    if column in EvaluationTableModel.TEXT_COLUMNS:
        return one_line(_texts(result)[column - 1]).casefold()
    if column in EvaluationTableModel.MATCH_COLUMNS:
        return int(_exact(result, column))
    return result.base_f1 if column == 7 else result.tuned_f1


def cell_tooltip(result: ExampleResult, column: int) -> str | None:
    if column == 0:
        return f"Record {result.example.index + 1:,} of the dataset"
    if column == 1:
        return conversation_tooltip(result)
    if column == 2:
        return answer_tooltip(result.example.reference, None)
    if column == 3:
        return answer_tooltip(result.base.text, result.base.done_reason)
    if column == 4:
        return answer_tooltip(result.tuned.text, result.tuned.done_reason)
    return None


# --- the dialog ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    """What the dialog reads when it opens (on the runner)."""

    job: Job
    publications: list[Publication]
    evaluations: list[Evaluation]


class _AnswerBox(QWidget):
    """One of the three texts of the selected example, in full: a title and a read-only box."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title_label = QLabel(title)
        self.title_label.setTextFormat(Qt.TextFormat.PlainText)
        self.title_label.setStyleSheet(_TITLE_STYLE)
        self.text_edit = QPlainTextEdit(readOnly=True)
        self.text_edit.setPlaceholderText("Select a row above to read it in full.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title_label)
        layout.addWidget(self.text_edit, 1)

    def show_text(self, title: str, text: str) -> None:
        self.title_label.setText(title)
        self.text_edit.setPlainText(text)


class EvaluateDialog(QDialog):
    """Run a published job's validation examples through the base and the fine-tune in Ollama.

    Signals: `evaluated(EvaluationReport)` when a run finished and was stored.
    """

    evaluated = Signal(object)

    def __init__(
        self,
        context: AppContext,
        runner: TaskRunner,
        connection: OllamaConnection,
        job_id: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._context = context
        self._runner = runner
        self._connection = connection
        self.job_id = job_id
        self._tasks = AsyncTasks(self)
        self._run_task: asyncio.Task[EvaluationReport] | None = None
        self._report_request = 0  # only the newest past run asked for is shown
        self.loaded = False
        self.report: EvaluationReport | None = None
        self.setWindowTitle(f"Evaluate job {job_id}")
        self.setMinimumSize(900, 600)
        self._build()
        self._load()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(self._build_settings())
        self.hint_label = _wrapped_label()
        self.hint_label.hide()
        layout.addWidget(self.hint_label)
        layout.addLayout(self._build_progress())
        self.summary_label = _wrapped_label("Run the evaluation, or open a past run.")
        self.summary_label.setStyleSheet(_TITLE_STYLE)
        self.description_label = _wrapped_label()
        layout.addWidget(self.summary_label)
        layout.addWidget(self.description_label)
        layout.addWidget(self._build_results(), 1)
        layout.addWidget(self._build_buttons())
        self.run_button.setDefault(True)  # once it is in the dialog, which keeps the default
        self._update_buttons()

    def _build_settings(self) -> QGroupBox:
        box = QGroupBox("Models and settings")
        row = QHBoxLayout(box)
        models = QFormLayout()
        models.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.tuned_combo = model_combo("The fine-tuned model in Ollama: the job's publications")
        self.tuned_combo.currentIndexChanged.connect(self.on_tuned_combo_changed)
        self.base_combo = model_combo("The model to compare with: the one the job was tuned from")
        for combo in (self.tuned_combo, self.base_combo):
            combo.currentTextChanged.connect(self.on_model_text_changed)
        self.past_combo = QComboBox()
        self.past_combo.setPlaceholderText("Loading…")
        self.past_combo.setToolTip("Open an earlier evaluation of this job")
        self.past_combo.activated.connect(self.on_past_combo_activated)
        models.addRow("Fine-tuned model", self.tuned_combo)
        models.addRow("Base model", self.base_combo)
        models.addRow("Past runs", self.past_combo)
        row.addLayout(models, 3)
        row.addLayout(self._build_numbers(), 1)
        return box

    def _build_numbers(self) -> QFormLayout:
        form = QFormLayout()
        self.examples_spin = _spin(1, 100_000, DEFAULT_EXAMPLES, "How many validation examples")
        self.seed_spin = _spin(0, 2**31 - 1, 0, "The seed of both models' (greedy) decoding")
        self.max_tokens_spin = _spin(1, 32_768, DEFAULT_MAX_TOKENS, "The longest answer, in tokens")
        form.addRow("Examples", self.examples_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Max tokens", self.max_tokens_spin)
        return form

    def _build_progress(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v of %m answers")
        self.progress_bar.hide()
        self.status_label = _wrapped_label()
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.status_label, 2)
        return row

    def _build_results(self) -> QSplitter:
        self.model = EvaluationTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = _results_table(self.proxy)
        selection = self.table.selectionModel()
        selection.selectionChanged.connect(self.on_table_selection_changed)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.table)
        splitter.addWidget(self._build_details())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        return splitter

    def _build_details(self) -> QWidget:
        details = QWidget()
        row = QHBoxLayout(details)
        row.setContentsMargins(0, 0, 0, 0)
        self.reference_box = _AnswerBox("Reference")
        self.base_box = _AnswerBox("Base answer")
        self.tuned_box = _AnswerBox("Fine-tuned answer")
        for box in (self.reference_box, self.base_box, self.tuned_box):
            row.addWidget(box, 1)
        return details

    def _build_buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Ask both models every example, score them, and store the run")
        self.run_button.clicked.connect(self.on_run_button_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run; nothing of it is stored")
        self.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        self.close_button = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        return buttons

    # --- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        database, job_id = self._context.database, self.job_id
        submit_for(
            self,
            self._runner,
            lambda _c: _Loaded(
                get_job(database, job_id),
                publications(database, job_id),
                list_evaluations(database, job_id),
            ),
            on_success=self.on_load_succeeded,
            on_error=self.on_load_failed,
        )

    def on_load_succeeded(self, loaded: _Loaded) -> None:
        self.setWindowTitle(f"Evaluate {loaded.job.name}")
        self._fill_models(loaded.publications)
        self._fill_past_runs(loaded.evaluations)
        self.loaded = True
        self._update_buttons()
        if loaded.evaluations:
            self.open_past_run(0)

    def on_load_failed(self, failure: TaskFailure) -> None:
        self.show_error(failure)
        self.past_combo.setPlaceholderText("No earlier runs")

    def _fill_models(self, published: list[Publication]) -> None:
        names: dict[str, str | None] = {}
        for publication in published:  # newest first: a name published again keeps its latest
            names.setdefault(publication.ollama_model, publication.ollama_base)
        bases = dict.fromkeys(base for base in names.values() if base)
        self.base_combo.addItems(list(bases))
        for name, base in names.items():
            self.tuned_combo.addItem(name, base)
        if names:
            self.tuned_combo.setCurrentIndex(0)
        else:
            self.show_hint(
                "This job has not been published to Ollama yet: publish it first, or type the "
                "name of a model in Ollama that was made from it."
            )

    def _fill_past_runs(self, evaluations: list[Evaluation]) -> None:
        self.past_combo.clear()
        self.past_combo.setPlaceholderText("No earlier runs")
        for evaluation in evaluations:
            self.past_combo.addItem(past_run_label(evaluation), evaluation)
        self.past_combo.setEnabled(bool(evaluations))

    def _reload_past_runs(self, select_id: int | None) -> None:
        database, job_id = self._context.database, self.job_id
        submit_for(
            self,
            self._runner,
            lambda _c: list_evaluations(database, job_id),
            on_success=lambda rows: self._show_past_runs(rows, select_id),
            on_error=self.show_error,
        )

    def _show_past_runs(self, evaluations: list[Evaluation], select_id: int | None) -> None:
        self._fill_past_runs(evaluations)
        ids = [evaluation.id for evaluation in evaluations]
        self.past_combo.setCurrentIndex(ids.index(select_id) if select_id in ids else -1)

    # --- public API --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._run_task is not None

    @property
    def tuned_model(self) -> str:
        return self.tuned_combo.currentText().strip()

    @property
    def base_model(self) -> str:
        return self.base_combo.currentText().strip()

    def run(self) -> None:
        """Start the evaluation with the chosen models and settings (ignored while one runs)."""
        if self.running or not self.tuned_model or not self.base_model:
            return
        context, examples = self._context, self.examples_spin.value()
        work = evaluate(
            self._connection.client,
            context.database,
            context.home,
            self.job_id,
            tuned_model=self.tuned_model,
            base_model=self.base_model,
            examples=examples,
            seed=self.seed_spin.value(),
            max_tokens=self.max_tokens_spin.value(),
            on_progress=self.on_evaluation_progress,
        )
        self._show_started(examples)
        self._run_task = self._tasks.start(
            work,
            on_success=self.on_evaluation_succeeded,
            on_error=self.on_evaluation_failed,
            on_done=self.on_evaluation_done,
        )
        self._update_buttons()

    def cancel(self) -> None:
        """Stop the run in progress; nothing of it is stored."""
        task = self._run_task
        if task is None or not task.cancel():
            return  # nothing running, or it has just ended and its callback is on its way
        self.status_label.setStyleSheet("")
        self.status_label.setText(CANCELLED_TEXT)

    def open_past_run(self, row: int) -> None:
        """Show the stored run in row `row` of Past runs (its answers are read on the runner)."""
        evaluation = self.past_combo.itemData(row)
        if not isinstance(evaluation, Evaluation):
            return
        self.past_combo.setCurrentIndex(row)
        self._report_request += 1
        request, home = self._report_request, self._context.home
        self._show_status(f"Opening the run of {format_time(evaluation.created_at)}…")
        submit_for(
            self,
            self._runner,
            lambda _c: load_report(home, evaluation),
            on_success=lambda report: self._on_report_loaded(request, report),
            on_error=lambda failure: self._on_report_failed(request, failure),
        )

    def show_report(self, report: EvaluationReport) -> None:
        """Show a run: its scores on one line, its examples in the table."""
        self.report = report
        self.summary_label.setText(summary_text(report.scores))
        self.description_label.setText(run_description(report))
        self.model.set_results(report.results)
        self.base_box.title_label.setText(f"Base answer · {report.base_model}")
        self.tuned_box.title_label.setText(f"Fine-tuned answer · {report.tuned_model}")
        if report.results:
            self.table.selectRow(0)
        else:
            self._show_selected(None)

    def show_error(self, failure: TaskFailure) -> None:
        """A failure's one sentence (the runner words a bug's as one already)."""
        self.status_label.setStyleSheet(ERROR_STYLE)
        self.status_label.setText(failure.message)

    def show_hint(self, text: str) -> None:
        self.hint_label.setText(text)
        self.hint_label.show()

    def done(self, result: int) -> None:
        """Closing cancels a run in progress (which then stores nothing)."""
        self._tasks.cancel_all()
        super().done(result)

    # --- slots -------------------------------------------------------------------------------

    def on_tuned_combo_changed(self, index: int) -> None:
        base = self.tuned_combo.itemData(index)
        if isinstance(base, str) and base:
            self.base_combo.setCurrentText(base)

    def on_model_text_changed(self, _text: str) -> None:
        self._update_buttons()

    def on_past_combo_activated(self, row: int) -> None:
        self.open_past_run(row)

    def on_run_button_clicked(self) -> None:
        self.run()

    def on_cancel_button_clicked(self) -> None:
        self.cancel()

    def on_table_selection_changed(self, _selected: QItemSelection, _old: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        source = self.proxy.mapToSource(rows[0]).row() if rows else -1
        self._show_selected(self.model.result_at(source))

    def on_evaluation_progress(self, done: int, total: int) -> None:
        """After each answer: both models answer every example, so `total` is twice the count."""
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self._show_status(f"Asking both models {total // 2:,} examples…")

    def on_evaluation_succeeded(self, report: EvaluationReport) -> None:
        self._report_request += 1  # a past run still being read is no longer wanted
        self.show_report(report)
        self._show_status(f"Finished and stored ({len(report.results):,} examples).")
        self._reload_past_runs(report.evaluation_id)
        self.evaluated.emit(report)

    def on_evaluation_failed(self, failure: TaskFailure) -> None:
        if not failure.known:  # AsyncTasks gives a bug as its exception: say what it is
            message = f"Something went wrong that should not have ({failure.message}); see the log."
            failure = TaskFailure(message, known=False, details=failure.details)
        self.show_error(failure)

    def on_evaluation_done(self) -> None:
        self._run_task = None
        self.progress_bar.hide()
        self._update_buttons()

    # --- helpers -----------------------------------------------------------------------------

    def _show_started(self, examples: int) -> None:
        self.progress_bar.setRange(0, 2 * examples)  # at most: the split may hold fewer
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self._show_status("Reading the validation examples…")

    def _show_status(self, text: str) -> None:
        self.status_label.setStyleSheet("")
        self.status_label.setText(text)

    def _on_report_loaded(self, request: int, report: EvaluationReport) -> None:
        if request == self._report_request:
            self.show_report(report)
            self._show_status("")

    def _on_report_failed(self, request: int, failure: TaskFailure) -> None:
        if request == self._report_request:
            self.show_error(failure)

    def _show_selected(self, result: ExampleResult | None) -> None:
        report = self.report
        if result is None or report is None:
            for box in (self.reference_box, self.base_box, self.tuned_box):
                box.text_edit.clear()
            return
        self.reference_box.text_edit.setPlainText(result.example.reference)
        self.base_box.show_text(
            _answer_title("Base answer", report.base_model, result.base_exact, result.base_f1),
            result.base.text,
        )
        self.tuned_box.show_text(
            _answer_title(
                "Fine-tuned answer", report.tuned_model, result.tuned_exact, result.tuned_f1
            ),
            result.tuned.text,
        )

    def _update_buttons(self) -> None:
        running = self.running
        ready = bool(self.tuned_model and self.base_model)
        # The button pressed hands the focus to the other one before it is disabled: a focus
        # that fell through to Close would make Enter close the dialog.
        if running:
            _enable_with_focus(self.cancel_button, self.run_button, True)
        else:
            _enable_with_focus(self.run_button, self.cancel_button, ready)
        settings = (self.tuned_combo, self.base_combo, self.examples_spin, self.seed_spin)
        for widget in (*settings, self.max_tokens_spin):
            widget.setEnabled(not running)


def _enable_with_focus(enabled: QPushButton, disabled: QPushButton, enable: bool) -> None:
    enabled.setEnabled(enable)
    if disabled.hasFocus() and enable:
        enabled.setFocus()
    disabled.setEnabled(False)


def _answer_title(title: str, model: str, exact: bool, f1: float) -> str:
    return f"{title} · {model} · {match_mark(exact)} exact · F1 {format_f1(f1)}"


def _wrapped_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    return label


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    spin.setGroupSeparatorShown(True)
    return spin


def _results_table(model: QSortFilterProxyModel) -> QTableView:
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setWordWrap(False)
    table.setAlternatingRowColors(True)
    table.setSortingEnabled(True)
    table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    rows = table.verticalHeader()
    rows.hide()
    rows.setDefaultSectionSize(table.fontMetrics().height() + 8)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    for column in EvaluationTableModel.TEXT_COLUMNS:
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    return table
