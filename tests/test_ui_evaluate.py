"""The Evaluate dialog against the stand-in Ollama server: a run, its scores and rows, past runs,
Cancel, errors, and a job that was never published."""

from __future__ import annotations

import json
import re

import pytest
from PySide6.QtCore import Qt

from app.datasets.importer import ImportOptions, import_dataset
from app.db.models import Job, Publication
from app.jobs.service import NewJob, create_job, job_dir
from app.ollama.evaluate import Answer, Example, list_evaluations, score_example
from app.ollama.types import ChatMessage
from app.workers.background import TaskRunner

BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # recorded by the job; nothing is trained
BASE = "smollm2:135m"  # the stand-in holds it
TUNED = "adder:latest"
TIMEOUT_MS = 10_000
# Sums with answers whose token F1 is known by hand: "3 plus 3 is 6" is five tokens, and the
# base always answers the next number, so four of them are right (precision = recall = 4/5).
NUMBERS = range(1, 9)
BASE_F1 = 0.8
QUESTION = re.compile(r"What is (\d+) plus \1\?")


def reference(n: int) -> str:
    return f"{n} plus {n} is {2 * n}"


def base_reply(question: str) -> str:
    n = _number(question)
    return f"{n} plus {n} is {2 * n + 1}"


def tuned_reply(question: str) -> str:
    """Right on the odd sums, no idea on the even ones (no token in common: F1 0)."""
    n = _number(question)
    return reference(n) if n % 2 else "I do not know"


def _number(question: str) -> int:
    match = QUESTION.fullmatch(question)
    assert match, question
    return int(match.group(1))


@pytest.fixture
def runner():  # type: ignore[no-untyped-def]
    task_runner = TaskRunner()
    yield task_runner
    assert task_runner.shutdown(), "background work did not finish"


@pytest.fixture
def job(context, tmp_path):  # type: ignore[no-untyped-def]
    """A completed job (never trained) on the sums, with a validation split of 8 records."""
    rows = [{"instruction": f"What is {n} plus {n}?", "output": reference(n)} for n in NUMBERS]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * 4))
    options = ImportOptions(name="sums", validation_fraction=0.25, split_seed=7)
    dataset = import_dataset(context.database, context.home, path, options)
    new = NewJob(dataset.id, BASE_ID, hyperparameters={"max_seq_length": 512})
    created = create_job(context.database, context.home, context.settings.load(), new)
    with context.database.session() as session:
        session.get(Job, created.id).status = "completed"
    return created


def publish(context, job, server, name=TUNED, base=BASE):  # type: ignore[no-untyped-def]
    """Record a publication as the publisher would (the stand-in holds the model)."""
    publication = Publication(
        job_id=job.id,
        ollama_model=name,
        ollama_url=server.url,
        ollama_base=base,
        route="adapter",
        quantize=None,
    )
    with context.database.session() as session:
        session.add(publication)


@pytest.fixture
def stand_in(ollama_server):  # type: ignore[no-untyped-def]
    ollama_server.add_model(TUNED)
    ollama_server.set_reply(TUNED, tuned_reply)
    ollama_server.set_reply(BASE, base_reply)
    return ollama_server


@pytest.fixture
def open_dialog(qtbot, context, runner, ollama_connection, job):  # type: ignore[no-untyped-def]
    """Opens the dialog on the job (with open(), as the Jobs tab does) once it has loaded."""
    from ui.evaluate_dialog import EvaluateDialog

    dialogs = []

    def opener():  # type: ignore[no-untyped-def]
        dialog = EvaluateDialog(context, runner, ollama_connection, job.id)
        qtbot.addWidget(dialog)
        dialog.resize(1200, 800)
        dialog.open()
        qtbot.waitUntil(lambda: dialog.loaded, timeout=TIMEOUT_MS)
        dialogs.append(dialog)
        return dialog

    yield opener
    for dialog in dialogs:
        dialog.close()
        qtbot.waitUntil(lambda d=dialog: not d.running, timeout=TIMEOUT_MS)


@pytest.fixture
def dialog(context, job, stand_in, open_dialog):  # type: ignore[no-untyped-def]
    publish(context, job, stand_in)
    return open_dialog()


def run(qtbot, dialog):  # type: ignore[no-untyped-def]
    """Press Run and wait until the run has ended, however it ended."""
    assert dialog.run_button.isEnabled()
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.running and not dialog.run_button.isEnabled()
    assert dialog.cancel_button.isEnabled() and dialog.progress_bar.isVisible()
    qtbot.waitUntil(lambda: not dialog.running, timeout=TIMEOUT_MS)


def cells(dialog):  # type: ignore[no-untyped-def]
    model = dialog.model
    return [
        [model.index(row, column).data() for column in range(model.columnCount())]
        for row in range(model.rowCount())
    ]


def stored(context, job):  # type: ignore[no-untyped-def]
    folder = job_dir(context.home, job.id) / "evaluations"
    files = sorted(folder.iterdir()) if folder.exists() else []
    return files, list_evaluations(context.database, job.id)


# --- a run ---------------------------------------------------------------------------------------


def test_the_publication_is_chosen_with_its_base(dialog, job):
    assert dialog.tuned_combo.currentText() == TUNED
    assert dialog.base_combo.currentText() == BASE
    assert dialog.windowTitle() == f"Evaluate {job.name}"
    assert dialog.examples_spin.value() == 20
    assert dialog.run_button.isEnabled() and not dialog.cancel_button.isEnabled()
    assert dialog.hint_label.isHidden()
    assert dialog.run_button.isDefault() and not dialog.close_button.isDefault()
    assert dialog.past_combo.count() == 0 and not dialog.past_combo.isEnabled()
    assert dialog.model.rowCount() == 0


def test_a_run_fills_the_summary_and_the_table(qtbot, dialog, context, job, stand_in):
    dialog.seed_spin.setValue(5)
    dialog.max_tokens_spin.setValue(64)
    reported = []
    dialog.evaluated.connect(reported.append)
    run(qtbot, dialog)

    rows = cells(dialog)
    assert len(rows) == 8  # the whole validation split: fewer than the 20 asked for
    for number, row in enumerate(rows, 1):
        n = _number(row[1])
        right = n % 2 == 1
        assert row == [
            str(number),
            f"What is {n} plus {n}?",
            reference(n),
            base_reply(row[1]),
            tuned_reply(row[1]),
            "✗",
            "✓" if right else "✗",
            f"{BASE_F1:.2f}",
            "1.00" if right else "0.00",
        ]
    share = sum(_number(row[1]) % 2 for row in rows) / len(rows)
    summary = dialog.summary_label.text()
    assert summary.startswith(
        f"Exact match: base 0% vs fine-tuned {share:.0%} · "
        f"token F1: base 0.80 vs fine-tuned {share:.2f} · tokens/s: base "
    )
    assert summary.endswith(" · 8 examples")
    assert "not reported" not in summary  # the stand-in reports its counts
    assert dialog.description_label.text() == (
        f"{TUNED} (fine-tuned) against {BASE} (base); seed 5, up to 64 tokens an answer, "
        "context 2,048."
    )
    chats = [r.json for r in stand_in.requests if r.path == "/api/chat"]
    assert {c["options"]["seed"] for c in chats} == {5}
    assert {c["options"]["num_predict"] for c in chats} == {64}

    # Stored, and listed under Past runs as the run on show.
    [report] = reported
    files, evaluations = stored(context, job)
    assert len(files) == 1 and [e.id for e in evaluations] == [report.evaluation_id]
    qtbot.waitUntil(lambda: dialog.past_combo.count() == 1, timeout=TIMEOUT_MS)
    assert dialog.past_combo.currentIndex() == 0
    assert TUNED in dialog.past_combo.currentText()
    assert dialog.status_label.text() == "Finished and stored (8 examples)."
    assert dialog.run_button.isEnabled() and not dialog.progress_bar.isVisible()


def test_selecting_a_row_shows_its_three_texts_in_full(qtbot, dialog):
    run(qtbot, dialog)
    assert dialog.reference_box.text_edit.toPlainText() == dialog.model.index(0, 2).data()
    even = next(row for row, cells_ in enumerate(cells(dialog)) if _number(cells_[1]) % 2 == 0)
    dialog.table.selectRow(even)
    result = dialog.model.result_at(even)
    n = _number(result.example.messages[-1].content)
    assert dialog.reference_box.text_edit.toPlainText() == reference(n)
    assert dialog.base_box.text_edit.toPlainText() == f"{n} plus {n} is {2 * n + 1}"
    assert dialog.tuned_box.text_edit.toPlainText() == "I do not know"
    assert dialog.base_box.title_label.text() == f"Base answer · {BASE} · ✗ exact · F1 0.80"
    assert dialog.tuned_box.title_label.text() == (
        f"Fine-tuned answer · {TUNED} · ✗ exact · F1 0.00"
    )
    for box in (dialog.reference_box, dialog.base_box, dialog.tuned_box):
        assert box.text_edit.isReadOnly()


def test_sorting_by_a_score_keeps_the_selection_on_its_example(qtbot, dialog):
    run(qtbot, dialog)
    dialog.table.sortByColumn(8, Qt.SortOrder.DescendingOrder)  # F1 of the fine-tune
    top = dialog.proxy.index(0, 8).data()
    assert top == "1.00"
    dialog.table.selectRow(0)
    assert dialog.tuned_box.text_edit.toPlainText() == dialog.proxy.index(0, 4).data()


def test_past_runs_open_with_the_same_rows(qtbot, dialog, open_dialog, stand_in):
    run(qtbot, dialog)
    first = dialog.model.results()
    stand_in.set_reply(BASE, tuned_reply)  # the second run: the base does as well
    run(qtbot, dialog)
    second = dialog.model.results()
    assert second != first
    qtbot.waitUntil(lambda: dialog.past_combo.count() == 2, timeout=TIMEOUT_MS)
    assert dialog.past_combo.currentIndex() == 0  # the newest first, and on show

    dialog.past_combo.setCurrentIndex(1)
    dialog.past_combo.activated.emit(1)
    qtbot.waitUntil(lambda: dialog.model.results() == first, timeout=TIMEOUT_MS)
    assert "base 0% vs" in dialog.summary_label.text()
    assert dialog.status_label.text() == ""

    # A dialog opened later shows the newest run straight away.
    later = open_dialog()
    qtbot.waitUntil(lambda: later.model.results() == second, timeout=TIMEOUT_MS)
    assert later.past_combo.count() == 2 and later.past_combo.currentIndex() == 0
    assert later.summary_label.text() == dialog_summary_of(second, later)


def dialog_summary_of(results, dialog):  # type: ignore[no-untyped-def]
    from ui.evaluate_dialog import summary_text

    assert dialog.report is not None and list(dialog.report.results) == results
    return summary_text(dialog.report.scores)


def test_a_damaged_past_run_is_one_sentence(qtbot, dialog, context, job):
    run(qtbot, dialog)
    qtbot.waitUntil(lambda: dialog.past_combo.count() == 1, timeout=TIMEOUT_MS)
    [file], _rows = stored(context, job)
    file.write_text("{not json")
    dialog.past_combo.activated.emit(0)
    qtbot.waitUntil(lambda: "damaged" in dialog.status_label.text(), timeout=TIMEOUT_MS)
    assert dialog.status_label.text().endswith("run the evaluation again.")


# --- stopping and failing ------------------------------------------------------------------------


def test_cancel_mid_run_stores_nothing_and_leaves_the_dialog_usable(
    qtbot, dialog, context, job, stand_in
):
    stand_in.token_delay = 0.05
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.progress_bar.value() >= 1, timeout=TIMEOUT_MS)
    assert dialog.progress_bar.maximum() == 16  # two answers an example
    assert dialog.status_label.text() == "Asking both models 8 examples…"
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.running, timeout=TIMEOUT_MS)

    from ui.evaluate_dialog import CANCELLED_TEXT

    assert dialog.status_label.text() == CANCELLED_TEXT
    assert stored(context, job) == ([], [])
    assert dialog.model.rowCount() == 0
    assert dialog.run_button.isEnabled() and not dialog.cancel_button.isEnabled()
    assert dialog.tuned_combo.isEnabled() and not dialog.progress_bar.isVisible()

    stand_in.token_delay = 0.0
    run(qtbot, dialog)
    assert dialog.model.rowCount() == 8
    assert len(stored(context, job)[1]) == 1


def test_closing_cancels_the_run(qtbot, dialog, context, job, stand_in):
    stand_in.token_delay = 0.05
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: any(r.path == "/api/chat" for r in stand_in.requests), timeout=TIMEOUT_MS
    )
    qtbot.mouseClick(dialog.close_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.running, timeout=TIMEOUT_MS)
    assert stored(context, job) == ([], [])


def test_an_ollama_error_is_one_sentence(qtbot, dialog, context, job, stand_in):
    stand_in.fail_during_stream("/api/chat", "llama runner process has terminated")
    run(qtbot, dialog)
    text = dialog.status_label.text()
    assert "llama runner process has terminated" in text
    assert text.endswith(".") and "\n" not in text
    assert "#b3261e" in dialog.status_label.styleSheet()
    assert stored(context, job) == ([], [])
    assert dialog.run_button.isEnabled()

    run(qtbot, dialog)  # the server is fine again
    assert dialog.model.rowCount() == 8
    assert dialog.status_label.styleSheet() == ""


def test_an_unknown_model_is_one_sentence(qtbot, dialog, context, job):
    dialog.tuned_combo.setCurrentText("nope:latest")
    run(qtbot, dialog)
    assert "nope" in dialog.status_label.text()
    assert stored(context, job) == ([], [])


# --- without a publication -----------------------------------------------------------------------


def test_an_unpublished_job_says_to_publish_it_first(qtbot, stand_in, open_dialog):
    dialog = open_dialog()
    assert dialog.hint_label.isVisible()
    assert "publish it first" in dialog.hint_label.text()
    assert dialog.tuned_combo.count() == 0 and dialog.tuned_model == ""
    assert not dialog.run_button.isEnabled()

    qtbot.keyClicks(dialog.tuned_combo.lineEdit(), TUNED)
    assert not dialog.run_button.isEnabled()  # nothing to compare it with yet
    qtbot.keyClicks(dialog.base_combo.lineEdit(), BASE)
    assert dialog.run_button.isEnabled()
    run(qtbot, dialog)
    assert dialog.model.rowCount() == 8


# --- the table model -----------------------------------------------------------------------------


def _result(number: int, *, system: bool = False):  # type: ignore[no-untyped-def]
    question = f"What is {number} plus {number}?\nThink it over."
    messages = (
        *([ChatMessage("system", "Be <brief> & exact.")] if system else []),
        ChatMessage("user", question),
    )
    example = Example(index=number * 3, messages=messages, reference=reference(number))

    def answer(text: str, reason: str = "stop") -> Answer:
        return Answer(text, len(text.split()), 1_000_000, 12, reason)

    base = answer(base_reply(f"What is {number} plus {number}?"))
    return score_example(example, base, answer(reference(number), "length"))


def test_the_table_model_passes_the_model_tester(qtmodeltester, qapp):
    from ui.evaluate_dialog import EvaluationTableModel

    model = EvaluationTableModel()
    model.set_results([_result(n, system=n == 2) for n in (1, 2, 3)])
    qtmodeltester.check(model)
    assert model.rowCount() == 3 and model.columnCount() == 9
    model.set_results([])
    qtmodeltester.check(model)


def test_cells_are_one_line_with_everything_in_the_tooltips(qapp):
    from ui.evaluate_dialog import EvaluationTableModel, one_line

    model = EvaluationTableModel()
    model.set_results([_result(2, system=True)])
    prompt = model.index(0, 1)
    assert prompt.data() == "What is 2 plus 2? Think it over."
    tip = prompt.data(Qt.ItemDataRole.ToolTipRole)
    assert "<b>system</b>: Be &lt;brief&gt; &amp; exact." in tip
    assert "<b>user</b>: What is 2 plus 2?<br>Think it over." in tip
    assert model.index(0, 0).data(Qt.ItemDataRole.ToolTipRole) == "Record 7 of the dataset"
    assert "max-tokens limit" in model.index(0, 4).data(Qt.ItemDataRole.ToolTipRole)
    assert "max-tokens limit" not in model.index(0, 3).data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(0, 6).data(Qt.ItemDataRole.ForegroundRole).name() == "#1e8e3e"
    assert model.index(0, 5).data(Qt.ItemDataRole.ForegroundRole).name() == "#c5221f"
    assert one_line("x" * 500, limit=10) == "x" * 9 + "…"
