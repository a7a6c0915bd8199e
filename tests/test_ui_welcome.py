"""The first-run panel against the Ollama stand-in and stand-in hardware probes (real child
processes printing fixed JSON), its one-click sample import and Quick test job, the Help menu,
the About box's torch line, and the tooltips of every hyperparameter."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtWidgets import QApplication, QMessageBox

from app.datasets.repository import list_datasets
from app.jobs.lifecycle import JobStatus
from app.jobs.presets import QUICK_TEST
from app.jobs.service import list_jobs
from app.paths import resource_path
from app.settings import Hyperparameters
from tests.test_hardware import GPU_REPORT, fake_snapshot, printing
from ui.hardware_info import HardwareInfo
from ui.main_window import MainWindow
from ui.new_job_dialog import ADAPTER_FIELDS, TRAINING_FIELDS, NewJobDialog
from ui.settings_tab import SettingsTab
from ui.welcome import NO_MODEL, SAMPLE_FILE, SAMPLE_NAME, SAMPLE_RECORDS, WelcomeDialog

WAIT_MS = 30_000
TINY_MODEL = "tiny-org/tiny-llama"


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache holding one tiny model, so the search never reads the real one."""
    cache = tmp_path / "hf-hub"
    fake_snapshot(cache, TINY_MODEL)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def welcome(qtbot, context, runner, ollama_connection):
    """Opens the panel on a stand-in probe; each is deleted before the connection it shows."""
    dialogs: list[WelcomeDialog] = []

    def open_panel(probe: list[str]) -> WelcomeDialog:
        hardware = HardwareInfo(runner, command=probe)
        dialog = WelcomeDialog(context, runner, ollama_connection, hardware)
        hardware.setParent(dialog)
        dialog.show()
        dialogs.append(dialog)
        return dialog

    yield open_panel
    qtbot.waitUntil(lambda: not runner.busy, timeout=WAIT_MS)  # every answer delivered
    for dialog in dialogs:
        dialog.close()
        shiboken6.delete(dialog)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ollama_up_then_down(qtbot, welcome, ollama_connection, ollama_server):
    dialog = welcome(printing(json.dumps(GPU_REPORT)))
    assert "Checking whether Ollama answers" in dialog.ollama_label.text()
    ollama_connection.start()
    up = f"Ollama {ollama_server.version} answers at {ollama_server.url}."
    qtbot.waitUntil(lambda: up in dialog.ollama_label.text(), timeout=WAIT_MS)
    down_url = f"http://127.0.0.1:{closed_port()}"
    ollama_connection.set_url(down_url)
    qtbot.waitUntil(lambda: "does not answer" in dialog.ollama_label.text(), timeout=WAIT_MS)
    text = dialog.ollama_label.text()
    assert f"Ollama does not answer at {down_url}: start it with <code>ollama serve</code>" in text
    assert "set its URL in <a href='settings'>Settings</a>." in text
    with qtbot.waitSignal(dialog.settings_requested):
        dialog.ollama_label.linkActivated.emit("settings")


def test_a_cuda_machine_is_described(qtbot, welcome):
    dialog = welcome(printing(json.dumps(GPU_REPORT)))
    qtbot.waitUntil(lambda: "NVIDIA" in dialog.hardware_label.text(), timeout=WAIT_MS)
    text = dialog.hardware_label.text()
    assert "16 CPU cores, 128 GB memory; CUDA: NVIDIA H100 80GB HBM3 (80 GB)." in text
    assert "torch 2.13.0+cu128" in text


@pytest.mark.parametrize(
    ("probe", "sentence"),
    [
        (printing("not JSON at all"), "The hardware check answered something unreadable"),
        (printing("", exit_code=3), "The hardware check failed (exit code 3)"),
    ],
)
def test_a_broken_probe_is_one_sentence(qtbot, welcome, probe, sentence):
    dialog = welcome(probe)
    qtbot.waitUntil(lambda: sentence in dialog.hardware_label.text(), timeout=WAIT_MS)
    assert dialog.hardware_label.text().count(". ") == 0


def test_no_base_model_says_what_to_do(qtbot, welcome):
    dialog = welcome(printing(json.dumps(GPU_REPORT)))
    qtbot.waitUntil(lambda: dialog.base_model is not None, timeout=WAIT_MS)
    dialog.show_base_model(None)
    assert dialog.quick_start_button.text() == "Import the sample dataset"
    assert dialog.quick_start_button.toolTip() == NO_MODEL
    assert "Jobs → New job…" in dialog.try_label.text()


def test_the_sample_ships_with_the_app():
    lines = resource_path(SAMPLE_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == SAMPLE_RECORDS
    assert all(json.loads(line)["instruction"] and json.loads(line)["output"] for line in lines)


@pytest.fixture
def window(qtbot, context):
    """The window without its pool started, and paused: a queued job stays queued."""
    win = MainWindow(context, start_workers=False)
    win.pool.pause()
    win.hardware.command = printing(json.dumps({**GPU_REPORT, "torch": "2.13.0"}))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.shut_down()


def test_one_click_imports_the_sample_and_queues_a_quick_test(qtbot, window, context):
    dialog = window.open_welcome()
    assert not dialog.isModal()
    qtbot.waitUntil(dialog.quick_start_button.isEnabled, timeout=WAIT_MS)
    assert dialog.base_model is not None and dialog.base_model.base_model == TINY_MODEL
    assert "tiny-org/tiny-llama</b>, the smallest base model found here" in dialog.try_label.text()
    with qtbot.waitSignal(dialog.job_queued, timeout=WAIT_MS):
        dialog.quick_start_button.click()
    (dataset,) = list_datasets(context.database)
    assert (dataset.name, dataset.rows, dataset.format) == (SAMPLE_NAME, SAMPLE_RECORDS, "alpaca")
    (job,) = list_jobs(context.database)
    assert job.status == JobStatus.QUEUED and job.base_model == TINY_MODEL
    assert job.dataset_id == dataset.id and job.method == "lora"
    hyperparameters = job.spec["hyperparameters"]
    assert hyperparameters["max_steps"] == QUICK_TEST.values["max_steps"]
    assert window.tabs.currentWidget() is window.jobs_tab and not dialog.isVisible()
    assert window.pool.running_jobs == []
    qtbot.waitUntil(lambda: window.datasets_tab.model.rowCount() == 1, timeout=WAIT_MS)


def test_first_launch_shows_the_panel_once(qtbot, context):
    first = MainWindow(context, start_workers=False, show_welcome=True)
    qtbot.addWidget(first)
    first.hardware.command = printing(json.dumps(GPU_REPORT))
    first.show()
    qtbot.waitUntil(lambda: first.welcome is not None and first.welcome.isVisible(), timeout=5000)
    qtbot.waitUntil(lambda: context.settings.load().welcome_shown, timeout=WAIT_MS)
    first.shut_down()
    first.close()
    again = MainWindow(context, start_workers=False, show_welcome=True)
    qtbot.addWidget(again)
    again.show()
    qtbot.wait(600)
    assert again.welcome is None
    again.welcome_action.trigger()  # Help → Welcome opens it whenever asked
    assert again.welcome is not None and again.welcome.isVisible()
    again.shut_down()


def test_saving_settings_keeps_the_first_run_flag(qtbot, context, runner):
    context.settings.save(context.settings.load().model_copy(update={"welcome_shown": True}))
    tab = SettingsTab(context, runner)
    qtbot.addWidget(tab)
    tab.editors["hyperparameters.epochs"].setText("2")
    with qtbot.waitSignal(tab.settings_saved, timeout=WAIT_MS):
        tab.save_button.click()
    saved = context.settings.load()
    assert saved.welcome_shown and saved.hyperparameters.epochs == 2


def test_help_menu_has_the_guide_welcome_and_about(window):
    help_menu = window.user_guide_action.associatedObjects()[-1]
    titles = [action.text() for action in help_menu.actions() if action.text()]
    assert titles == ["&User guide", "&Welcome", "&About Model Training Manager"]
    from ui.help import user_guide_url

    url = user_guide_url()
    assert url is not None and url.fragment() == "user-guide"
    assert url.isLocalFile() and Path(url.toLocalFile()).name == "README.md"
    assert "## User guide" in Path(url.toLocalFile()).read_text(encoding="utf-8")


@pytest.mark.parametrize(("torch", "shown"), [("2.13.0", "torch 2.13.0"), (None, "not installed")])
def test_about_names_torch_from_the_probe(qtbot, window, torch, shown):
    window.hardware.command = printing(json.dumps({**GPU_REPORT, "torch": torch}))
    window.about_action.trigger()
    (box,) = [
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    ]
    assert "torch checking…" in box.text() and f"Python {sys.version.split()[0]}" in box.text()
    qtbot.waitUntil(lambda: shown in box.text(), timeout=WAIT_MS)
    assert "Qt " in box.text() and "PySide6 " in box.text()
    box.close()


def test_every_hyperparameter_has_a_tooltip(qtbot, context, runner):
    settings_tab = SettingsTab(context, runner)
    qtbot.addWidget(settings_tab)
    for key in Hyperparameters.model_fields:
        assert settings_tab.editors[f"hyperparameters.{key}"].toolTip(), key
    dialog = NewJobDialog(context, runner, [], None)
    qtbot.addWidget(dialog)
    for key in {**TRAINING_FIELDS, **ADAPTER_FIELDS}:
        assert dialog.editors[key].toolTip(), key
    methods = dialog.method_combo
    assert all(methods.itemData(i, 3) for i in range(methods.count()))  # Qt.ToolTipRole
    qtbot.waitUntil(lambda: not runner.busy, timeout=WAIT_MS)
