"""The Jobs tab, the New Job dialog and the Dashboard, driven as a person would, with real
tiny-model jobs through the real worker pool; the memory estimate and the presets.
Offscreen; any Qt warning fails the test."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset
from app.db.models import Job
from app.events import EvalEvent, ProgressEvent, StartedEvent
from app.jobs.estimate import EstimateUnavailable, estimate_memory, model_shape
from app.jobs.presets import PRESETS, matching_preset
from app.jobs.service import (
    NewJob,
    apply_events,
    cancel_job,
    claim_next,
    create_job,
    get_job,
    list_jobs,
)
from app.jobs.spec import TrainingHyperparameters
from tests import training_fixtures
from tests.training_fixtures import FACTS
from ui.job_models import JobFilterProxy, JobTableModel, load_curves, load_job_rows
from ui.jobs_tab import JobsTab
from ui.main_window import MainWindow
from ui.new_job_dialog import DEFAULTS_ITEM, NewJobDialog

tiny_model = training_fixtures.tiny_model
WAIT_MS = 30_000
JOB_WAIT_MS = 240_000
# Small and quick on the tiny model: 29 training records in batches of 4, 8 steps an epoch.
FAST = {
    "max_steps": "",
    "max_seq_length": "64",
    "batch_size": "4",
    "gradient_accumulation_steps": "1",
    "learning_rate": "0.005",
    "warmup_ratio": "0",
    "lora_r": "8",
    "lora_alpha": "16",
    "lora_dropout": "0",
}


@pytest.fixture
def context(home):
    ctx = AppContext.open(home.root)
    yield ctx
    ctx.close()


@pytest.fixture
def facts_dataset(context, tmp_path):
    path = tmp_path / "facts.jsonl"
    rows = [{"instruction": q, "output": a} for q, a in FACTS] * 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return import_dataset(context.database, context.home, path, ImportOptions(name="facts"))


@pytest.fixture
def open_window(qtbot, context):
    """Opens the window (its pool starts after the first paint); stops its jobs afterwards."""
    windows: list[MainWindow] = []

    def opener(start_workers: bool = True) -> MainWindow:
        win = MainWindow(context, start_workers=start_workers)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        windows.append(win)
        qtbot.waitUntil(lambda: win.jobs_tab.loaded, timeout=WAIT_MS)
        return win

    yield opener
    for win in windows:
        win.pool.stop_all()
        qtbot.waitUntil(lambda w=win: not w.pool.running_jobs, timeout=JOB_WAIT_MS)
        assert win.runner.shutdown(), "background work did not finish"


@pytest.fixture
def window(open_window):
    return open_window()


def _type(qtbot, editor, text: str) -> None:
    """Replace the editor's text by typing, as a person would."""
    editor.selectAll()
    if text:
        qtbot.keyClicks(editor, text)
    else:
        qtbot.keyClick(editor, Qt.Key.Key_Delete)


def _open_dialog(qtbot, tab: JobsTab) -> NewJobDialog:
    tab.new_button.click()
    dialog = tab.dialog
    assert isinstance(dialog, NewJobDialog) and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.loaded, timeout=WAIT_MS)
    return dialog


def _fill(qtbot, dialog: NewJobDialog, model: Path, **values: str) -> None:
    dialog.base_model_combo.setCurrentText(str(model))
    quick = dialog.preset_combo.findText("Quick test")
    dialog.preset_combo.activated.emit(quick)
    assert dialog.editors["max_steps"].text() == "30"
    for key, value in {**FAST, **values}.items():
        _type(qtbot, dialog.editors[key], value)


def _queue_through_dialog(qtbot, window: MainWindow, model: Path, **values: str) -> str:
    """Queue a job with the New Job dialog; return its id once the table shows it selected."""
    tab = window.jobs_tab
    window.tabs.setCurrentWidget(tab)
    count = tab.model.rowCount()
    dialog = _open_dialog(qtbot, tab)
    _fill(qtbot, dialog, model, **values)
    assert dialog.preset_combo.currentText() == "Custom"
    qtbot.waitUntil(dialog.create_button.isEnabled, timeout=WAIT_MS)
    dialog.create_button.click()
    qtbot.waitUntil(lambda: tab.model.rowCount() == count + 1, timeout=WAIT_MS)
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: len(tab.selected_ids()) == 1, timeout=WAIT_MS)
    return tab.selected_ids()[0]


def _wait_for_status(qtbot, tab: JobsTab, job_id: str, status: str, timeout=JOB_WAIT_MS) -> None:
    def reached() -> bool:
        row = tab.model.job(job_id)
        assert row is not None
        assert row.status != "failed" or status == "failed", row.error
        return row.status == status

    qtbot.waitUntil(reached, timeout=timeout)


# --- real jobs through the real pool ---------------------------------------------------------


def test_a_job_queued_in_the_dialog_runs_to_completion_live(
    qtbot, window, facts_dataset, tiny_model
):
    tab = window.jobs_tab
    assert tab.table_stack.currentWidget() is tab.empty_label
    live_steps: list[int] = []
    window.pool.job_event.connect(
        lambda _id, event: (
            live_steps.append(event.step) if isinstance(event, ProgressEvent) else None
        )
    )
    seen_progress: list[float] = []
    tab.model.dataChanged.connect(
        lambda top, _bottom, _roles: seen_progress.append(
            tab.model.job_at(top.row()).progress or 0.0
        )
    )
    job_id = _queue_through_dialog(qtbot, window, tiny_model, epochs="6", eval_steps="8")
    assert tab.detail.shown_ids == [job_id]
    _wait_for_status(qtbot, tab, job_id, "completed")

    row = tab.model.job(job_id)
    assert row.step == row.total_steps == 48
    assert row.progress == 1.0 and row.loss is not None and row.tokens_per_second
    assert any(0 < p < 1 for p in seen_progress), "the table never showed progress under way"
    assert live_steps and live_steps[-1] == 48
    qtbot.waitUntil(lambda: tab.detail.job is not None and tab.detail.job.status == "completed")
    curves = tab.detail.chart.curves(job_id)
    assert curves is not None
    assert curves.steps[-1] == 48 and len(curves.steps) >= len(set(live_steps))
    assert curves.eval_steps[:2] == [8, 16] and len(curves.eval_losses) == len(curves.eval_steps)
    assert "adapter" in tab.detail.artifacts_label.text()
    assert "Step 48 of 48" in tab.detail.progress_label.text()
    assert not tab.detail.cancel_button.isEnabled() and tab.detail.duplicate_button.isEnabled()
    assert (window.context.home.jobs / job_id / "adapter" / "adapter_model.safetensors").is_file()
    qtbot.waitUntil(lambda: "completed" in window.statusBar().currentMessage(), timeout=WAIT_MS)
    dashboard = window.dashboard_tab
    qtbot.waitUntil(lambda: "1</b> completed" in dashboard.jobs_label.text(), timeout=WAIT_MS)
    assert "completed" in dashboard.recent_label.text()
    assert "Nothing is training" in dashboard.running_empty_label.text()

    # Selecting the job again reads its curves from the database: the same points.
    tab.table.clearSelection()
    tab.select_job(job_id)
    qtbot.waitUntil(lambda: not tab.detail.loading, timeout=WAIT_MS)
    stored = tab.detail.chart.curves(job_id)
    assert stored.steps[-1] == 48 and stored.eval_steps == curves.eval_steps


def test_cancel_a_running_job_then_resume_it_from_its_checkpoint(
    qtbot, window, facts_dataset, tiny_model
):
    tab = window.jobs_tab
    job_id = _queue_through_dialog(
        qtbot, window, tiny_model, epochs="8", save_steps="1000", eval_steps="1000"
    )
    qtbot.waitUntil(lambda: tab.model.job(job_id).step >= 6, timeout=JOB_WAIT_MS)
    qtbot.waitUntil(lambda: running_on_dashboard(window, job_id), timeout=WAIT_MS)
    assert tab.detail.job is not None and tab.detail.cancel_button.isEnabled()
    tab.detail.cancel_button.click()
    _wait_for_status(qtbot, tab, job_id, "cancelled")
    stopped_at = get_job(window.context.database, job_id).step
    checkpoints = window.context.home.jobs / job_id / "checkpoints"
    assert any(checkpoints.iterdir()), "cancelling saved no checkpoint"
    assert 0 < stopped_at < 64
    qtbot.waitUntil(tab.detail.resume_button.isEnabled, timeout=WAIT_MS)
    assert tab.detail.retry_button.isEnabled() and tab.detail.delete_button.isEnabled()

    tab.detail.resume_button.click()
    _wait_for_status(qtbot, tab, job_id, "completed")
    done = get_job(window.context.database, job_id)
    assert done.step == done.total_steps == 64
    qtbot.waitUntil(lambda: "resuming from" in tab.detail.log_text, timeout=WAIT_MS)
    tab.detail.log_filter.setText("no such words")
    assert tab.detail.log_text == ""
    tab.detail.log_filter.setText("RESUMING")
    assert "resuming from" in tab.detail.log_text
    steps = load_curves(window.context.database, [job_id])[job_id].steps
    assert steps[0] <= stopped_at < steps[-1] == 64  # one curve across both runs


def test_a_failed_job_says_why_notifies_and_retries(qtbot, window, facts_dataset, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    tab = window.jobs_tab
    job_id = _queue_through_dialog(qtbot, window, not_a_model, epochs="1")
    _wait_for_status(qtbot, tab, job_id, "failed")
    qtbot.waitUntil(lambda: "config.json" in tab.detail.error_label.text(), timeout=WAIT_MS)
    assert "failed" in window.statusBar().currentMessage()
    assert tab.detail.retry_button.isEnabled() and not tab.detail.resume_button.isEnabled()
    with qtbot.waitSignal(
        window.pool.job_finished,
        timeout=JOB_WAIT_MS,
        check_params_cb=lambda finished, _status: finished == job_id,
    ):
        tab.detail.retry_button.click()
    assert get_job(window.context.database, job_id).attempt == 2
    _wait_for_status(qtbot, tab, job_id, "failed")
    assert "failed" in window.dashboard_tab.jobs_label.text()


def running_on_dashboard(window: MainWindow, job_id: str) -> bool:
    dashboard = window.dashboard_tab
    progress = dashboard.running_progress(job_id)
    return progress is not None and progress > 0 and "busy" in dashboard.workers_label.text()


def test_a_job_whose_process_died_shows_interrupted_and_resumes(
    qtbot, open_window, context, facts_dataset, tiny_model
):
    settings = context.settings.load()
    values = {k: v for k, v in FAST.items() if v != ""} | {"epochs": 1}
    job = create_job(
        context.database,
        context.home,
        settings,
        NewJob(facts_dataset.id, str(tiny_model), "orphan", values),
    )
    claim_next(context.database, "a window that crashed")
    with context.database.session() as session:
        session.get(Job, job.id).pid = 2**22 + 12345  # a pid nobody has
    window = open_window()
    tab = window.jobs_tab
    _wait_for_status(qtbot, tab, job.id, "interrupted", timeout=WAIT_MS)
    tab.select_job(job.id)
    qtbot.waitUntil(tab.detail.resume_button.isEnabled, timeout=WAIT_MS)
    assert "Its process stopped" in tab.detail.error_label.text()
    tab.detail.resume_button.click()
    _wait_for_status(qtbot, tab, job.id, "completed")
    assert tab.model.job(job.id).step == 8


# --- without training ------------------------------------------------------------------------


def test_cancel_a_queued_job_duplicate_it_and_delete_it(qtbot, window, facts_dataset, tiny_model):
    dashboard = window.dashboard_tab
    dashboard.pause_button.click()  # queued jobs stay queued
    assert window.pool.paused and not dashboard.pause_button.isEnabled()
    assert "Paused" in dashboard.workers_label.text()
    tab = window.jobs_tab
    job_id = _queue_through_dialog(qtbot, window, tiny_model, epochs="2", seed="7")
    assert tab.model.job(job_id).status == "queued"
    qtbot.waitUntil(lambda: tab.detail.job is not None, timeout=WAIT_MS)
    assert "Queued" in tab.detail.progress_label.text()
    tab.detail.cancel_button.click()
    _wait_for_status(qtbot, tab, job_id, "cancelled", timeout=WAIT_MS)

    tab.detail.duplicate_button.click()
    duplicate = tab.dialog
    qtbot.waitUntil(lambda: duplicate.loaded, timeout=WAIT_MS)
    assert duplicate.windowTitle() == "Duplicate job"
    assert duplicate.base_model == str(tiny_model)
    assert duplicate.dataset_id == facts_dataset.id
    assert duplicate.editors["epochs"].text() == "2" and duplicate.editors["seed"].text() == "7"
    assert duplicate.name_edit.text().endswith("(copy)")
    duplicate.reject()

    qtbot.waitUntil(tab.detail.delete_button.isEnabled, timeout=WAIT_MS)
    tab.detail.delete_button.click()
    box = tab._confirm_box
    assert isinstance(box, QMessageBox) and "cannot be undone" in box.text()
    next(b for b in box.buttons() if b.text() == "Delete").click()
    qtbot.waitUntil(lambda: tab.model.rowCount() == 0, timeout=WAIT_MS)
    assert not (window.context.home.jobs / job_id).exists()
    assert tab.table_stack.currentWidget() is tab.empty_label
    dashboard.resume_button.click()
    assert not window.pool.paused


def test_the_queue_is_reordered_from_the_detail_pane(qtbot, window, facts_dataset, tiny_model):
    window.dashboard_tab.pause_button.click()  # nothing starts: the order is what we watch
    tab = window.jobs_tab
    first = _queue_through_dialog(qtbot, window, tiny_model)
    second = _queue_through_dialog(qtbot, window, tiny_model)
    progress = JobTableModel.PROGRESS_COLUMN

    def place(job_id: str) -> str:
        return tab.model.data(tab.model.index(tab.model.row_of(job_id), progress))

    qtbot.waitUntil(lambda: place(second) == "#2 in queue", timeout=WAIT_MS)
    tab.select_job(second)
    qtbot.waitUntil(
        lambda: tab.detail.job is not None and tab.detail.job.id == second, timeout=WAIT_MS
    )
    assert tab.detail.queue_button.isEnabled()
    tab.detail.move_actions["front"].trigger()
    qtbot.waitUntil(lambda: place(second) == "#1 in queue", timeout=WAIT_MS)
    assert place(first) == "#2 in queue"
    from app.jobs.service import next_queued

    assert next_queued(window.context.database).id == second  # the pool starts it next


def test_the_dialog_refuses_bad_values_beside_the_form(qtbot, window, facts_dataset, tiny_model):
    dialog = _open_dialog(qtbot, window.jobs_tab)
    assert dialog.dataset_id == facts_dataset.id
    assert dialog.editors["epochs"].toolTip().startswith("Passes over the training split")
    dialog.base_model_combo.setCurrentText(str(tiny_model))
    qtbot.waitUntil(lambda: "an estimate" in dialog.estimate_label.text(), timeout=WAIT_MS)
    _type(qtbot, dialog.editors["epochs"], "0")
    assert dialog.errors["epochs"].text() == "Must be at least 1."
    assert not dialog.create_button.isEnabled()
    _type(qtbot, dialog.editors["epochs"], "1")
    _type(qtbot, dialog.editors["gradient_accumulation_steps"], "64")
    assert "must not exceed batch_size" in dialog.error_label.text()
    _type(qtbot, dialog.editors["gradient_accumulation_steps"], "1")
    assert dialog.error_label.text() == "" and dialog.create_button.isEnabled()

    dialog.base_model_combo.setCurrentText("/nowhere/model.gguf")
    qtbot.waitUntil(lambda: "No memory estimate" in dialog.estimate_label.text(), timeout=WAIT_MS)
    dialog.create_button.click()
    qtbot.waitUntil(lambda: "/nowhere/model.gguf" in dialog.error_label.text(), timeout=WAIT_MS)
    assert "does not exist" in dialog.error_label.text()
    assert dialog.isVisible() and dialog.create_button.isEnabled()
    assert list_jobs(window.context.database) == []
    dialog.reject()


def test_the_base_model_comes_from_a_file_dialog_opened_without_a_nested_loop(
    qtbot, window, facts_dataset, tmp_path
):
    settings = window.context.settings.load()
    settings.hyperparameters.epochs = 5
    window.context.settings.save(settings)
    dialog = _open_dialog(qtbot, window.jobs_tab)
    assert dialog.preset_combo.currentText() == DEFAULTS_ITEM
    assert dialog.editors["epochs"].text() == "5"
    gguf_button = next(
        b for b in dialog.findChildren(type(dialog.create_button)) if b.text() == "GGUF file…"
    )
    gguf_button.click()
    files = dialog._file_dialog
    assert isinstance(files, QFileDialog) and files.isVisible()
    files.fileSelected.emit(str(tmp_path / "model.Q4_K_M.gguf"))
    assert dialog.base_model == str(tmp_path / "model.Q4_K_M.gguf")
    files.reject()
    dialog.reject()


def test_several_selected_jobs_compare_their_recorded_curves(
    qtbot, open_window, context, facts_dataset, tiny_model
):
    jobs = _some_jobs(context, facts_dataset, tiny_model, count=3)
    for number, job in enumerate(jobs[1:], start=1):
        points = [
            ProgressEvent(
                step=s,
                total_steps=10,
                epoch=s / 10,
                loss=number + 1 / s,
                learning_rate=1e-4,
                tokens_per_second=100.0,
                eta_seconds=1.0,
            )
            for s in range(1, 11)
        ]
        apply_events(context.database, job.id, [*points, EvalEvent(step=10, eval_loss=number)])
    window = open_window(start_workers=False)
    tab = window.jobs_tab
    tab._restore_selection([jobs[1].id, jobs[2].id])
    qtbot.waitUntil(lambda: len(tab.detail.chart.keys) == 2, timeout=WAIT_MS)
    assert set(tab.detail.chart.keys) == {jobs[1].id, jobs[2].id}
    assert tab.detail.chart.curves(jobs[2].id).steps == list(range(1, 11))
    assert tab.detail.chart.curves(jobs[1].id).eval_losses == [1.0]
    assert "2 jobs compared" in tab.detail.title_label.text()
    assert not any(b.isEnabled() for b in tab.detail.action_buttons)
    tab.status_combo.setCurrentIndex(tab.status_combo.findData("cancelled"))
    assert tab.proxy.rowCount() == 1 and "1 of 3 jobs" in tab.count_label.text()
    assert tab.status_combo.currentText() == "Cancelled (1)"


def test_the_dialog_without_datasets_says_what_to_do(qtbot, window):
    dialog = _open_dialog(qtbot, window.jobs_tab)
    assert "Import a dataset" in dialog.dataset_hint.text()
    dialog.base_model_combo.setCurrentText("org/model")
    assert not dialog.create_button.isEnabled()
    dialog.reject()


def test_presets_fill_the_form_and_the_method_scales_the_learning_rate(
    qtbot, window, facts_dataset
):
    dialog = _open_dialog(qtbot, window.jobs_tab)
    assert dialog.preset_combo.currentText() == "Balanced"  # the app's defaults are Balanced
    for preset in PRESETS:
        dialog.preset_combo.activated.emit(dialog.preset_combo.findText(preset.name))
        assert dialog.preset_combo.currentText() == preset.name
        assert dialog.editors["epochs"].text() == str(preset.values["epochs"])
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("full"))
    assert float(dialog.editors["learning_rate"].text()) == pytest.approx(1e-5)
    assert not dialog.editors["lora_r"].isEnabled()
    _type(qtbot, dialog.editors["epochs"], "9")
    assert dialog.preset_combo.currentText() == "Custom"
    dialog.reject()


# --- the models --------------------------------------------------------------------------------


def _some_jobs(context, dataset, model, count=5) -> list[Job]:
    settings = context.settings.load()
    jobs = []
    for number in range(count):
        new = NewJob(dataset.id, str(model), name=f"run {number}", hyperparameters={"epochs": 1})
        jobs.append(create_job(context.database, context.home, settings, new))
    cancel_job(context.database, jobs[0].id)
    return jobs


def test_job_models_pass_the_model_tester_and_filter(
    qtmodeltester, context, facts_dataset, tiny_model
):
    jobs = _some_jobs(context, facts_dataset, tiny_model)
    model = JobTableModel()
    model.set_rows(load_job_rows(context.database))
    assert [model.job_at(r).name for r in range(5)] == [f"run {n}" for n in (4, 3, 2, 1, 0)]
    qtmodeltester.check(model)
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy)
    proxy.set_status("cancelled")
    assert proxy.rowCount() == 1 and proxy.index(0, 0).data() == "run 0"
    proxy.set_status(None)
    proxy.set_search("RUN 3")
    assert proxy.rowCount() == 1 and proxy.index(0, 0).data() == "run 3"
    proxy.set_search("")
    proxy.sort(JobTableModel.HEADERS.index("Name"))
    assert proxy.index(0, 0).data() == "run 0"
    qtmodeltester.check(proxy)
    assert model.recent_base_models() == [str(tiny_model)]
    assert jobs[0].id in {model.job_at(r).id for r in range(model.rowCount())}


def test_live_events_update_a_row_in_memory_and_repaint_on_flush(
    qtbot, context, facts_dataset, tiny_model
):
    jobs = _some_jobs(context, facts_dataset, tiny_model, count=2)
    model = JobTableModel()
    model.set_rows(load_job_rows(context.database))
    changes: list[int] = []
    model.dataChanged.connect(lambda top, _bottom, _roles: changes.append(top.row()))
    job_id = jobs[1].id
    assert model.apply_event(job_id, StartedEvent(total_steps=40, device="cpu"))
    for step in range(1, 11):
        progress = ProgressEvent(
            step=step,
            total_steps=40,
            epoch=step / 8,
            loss=2.0 / step,
            learning_rate=1e-4,
            tokens_per_second=900.0,
            eta_seconds=30.0,
        )
        assert model.apply_event(job_id, progress)
    model.apply_event(job_id, EvalEvent(step=10, eval_loss=0.5))
    assert changes == []  # nothing repaints until the tab's timer flushes
    model.flush()
    row = model.row_of(job_id)
    assert changes == [row]
    job = model.job(job_id)
    assert (job.status, job.step, job.progress, job.eval_loss) == ("running", 10, 0.25, 0.5)
    assert model.index(row, JobTableModel.PROGRESS_COLUMN).data() == "10 / 40"
    assert model.index(row, 8).data() == "30 s"
    assert not model.apply_event("unknown", StartedEvent(total_steps=1, device="cpu"))
    # A reload from the database (written in batches, so behind) keeps the newer live figures.
    with context.database.session() as session:
        session.get(Job, job_id).status = "running"
    model.set_rows(load_job_rows(context.database))
    assert model.job(job_id).step == 10


# --- the estimate and the presets ------------------------------------------------------------


def _safetensors_parameters(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.safetensors"):
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for size in tensor["shape"]:
                    count *= size
                total += count
    return total


def test_the_estimate_counts_the_parameters_from_config_json(tiny_model):
    shape = model_shape(str(tiny_model))
    assert shape.parameters == _safetensors_parameters(tiny_model)
    lora = estimate_memory(str(tiny_model), "lora", batch_size=4, max_seq_length=64, lora_r=8)
    full = estimate_memory(str(tiny_model), "full", batch_size=4, max_seq_length=64, lora_r=8)
    assert lora.trainable_parameters < full.trainable_parameters == shape.parameters
    assert full.training_bytes == 12 * shape.parameters
    assert lora.checkpointed_bytes <= lora.total_bytes
    longer = estimate_memory(str(tiny_model), "lora", batch_size=4, max_seq_length=128, lora_r=8)
    assert longer.activation_bytes == 2 * lora.activation_bytes
    assert "an estimate" in lora.sentence()


def test_the_estimate_reads_a_gguf_header_or_its_size(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(300)])
    writer.add_tensor("output.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shape = model_shape(str(path))
    assert (shape.hidden, shape.layers, shape.vocab) == (64, 2, 300)
    assert shape.source == "the GGUF file's header"
    junk = tmp_path / "big.Q8_0.gguf"
    junk.write_bytes(b"\0" * 1_000_000)
    guessed = model_shape(str(junk))
    assert guessed.parameters == int(1_000_000 * 8 / 8.5) and "Q8_0" in guessed.source


def test_no_estimate_without_a_shape(tmp_path):
    with pytest.raises(EstimateUnavailable, match="not on this machine"):
        model_shape("some-org/some-model-nobody-cached")
    with pytest.raises(EstimateUnavailable, match="no model folder"):
        model_shape(str(tmp_path / "missing"))
    with pytest.raises(EstimateUnavailable, match="Choose a base model"):
        model_shape("  ")


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_every_preset_is_valid_and_recognised(method):
    for preset in PRESETS:
        values = preset.values_for(method)
        TrainingHyperparameters.model_validate({**values, "method": method})
        assert matching_preset(values, method) is preset
    assert matching_preset({"epochs": 99}, method) is None
