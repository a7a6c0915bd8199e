"""The window end to end against the stand-in Ollama: a real tiny-model job published from the
Jobs tab, then chatted with beside its base in the playground; the status bar; Settings' Test."""

from __future__ import annotations

import pytest

from app.context import AppContext
from tests import test_ollama_publish
from tests.test_ollama_publish import TINY, len_vocab
from ui.async_tasks import install_event_loop, remove_event_loop
from ui.main_window import MainWindow

tiny_model = test_ollama_publish.tiny_model
trained = test_ollama_publish.trained
published = test_ollama_publish.published
WAIT_MS = 30_000


@pytest.fixture
def window(qtbot, qapp, published, ollama_server):
    """The window on a copy of the trained data folder, its Ollama URL the stand-in's."""
    context, jobs = published
    _use_ollama(context, ollama_server.url)
    loop = install_event_loop(qapp)
    win = MainWindow(context)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win, jobs
    win.shut_down()
    remove_event_loop(loop, *win.closing_work())


def _use_ollama(context: AppContext, url: str) -> None:
    settings = context.settings.load()
    settings.ollama_url = url
    context.settings.save(settings)


def test_publish_from_the_jobs_tab_then_compare_in_the_playground(qtbot, window, ollama_server):
    win, jobs = window
    context = win.context
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    qtbot.waitUntil(
        lambda: f"Ollama {ollama_server.version}" in win.ollama_label.text(), timeout=WAIT_MS
    )

    tab = win.jobs_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.model.row_of(jobs["llama"]) >= 0, timeout=WAIT_MS)
    tab.select_job(jobs["llama"])
    qtbot.waitUntil(tab.detail.publish_button.isEnabled, timeout=WAIT_MS)
    tab.detail.publish_button.click()
    dialog = tab.ollama_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.base_combo.count() > 0, timeout=WAIT_MS)
    dialog.base_combo.setCurrentText("tiny-base")
    assert "Matches the job's base model" in dialog.base_note.text()
    dialog.name_edit.setText("facts-ui")
    dialog.publish_button.click()
    qtbot.waitUntil(lambda: dialog.outcome is not None, timeout=WAIT_MS)
    assert dialog.outcome.route == "adapter"
    assert "success" in dialog.log_view.toPlainText()
    assert "Published facts-ui" in dialog.result_label.text()
    assert "facts-ui:latest" in ollama_server.model_names()

    dialog.chat_button.click()  # the playground opens with both models side by side
    assert win.tabs.currentWidget() is win.models_tab
    assert win.models_tab.currentWidget() is win.playground
    qtbot.waitUntil(lambda: "facts-ui:latest" in win.models_list.model.names(), timeout=WAIT_MS)


def test_a_refused_base_is_one_sentence_in_the_dialog(qtbot, window, ollama_server):
    win, jobs = window
    tab = win.jobs_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.model.row_of(jobs["llama"]) >= 0, timeout=WAIT_MS)
    tab.select_job(jobs["llama"])
    qtbot.waitUntil(tab.detail.publish_button.isEnabled, timeout=WAIT_MS)
    tab.detail.publish_button.click()
    dialog = tab.ollama_dialog
    qtbot.waitUntil(lambda: dialog.base_combo.count() > 0, timeout=WAIT_MS)
    dialog.base_combo.setCurrentText("smollm2:135m")  # a llama, but of another shape
    dialog.publish_button.click()
    qtbot.waitUntil(dialog.error_label.isVisible, timeout=WAIT_MS)
    assert dialog.error_label.text().startswith(
        "The fine-tune was trained on a llama model with 2 layers, but smollm2:135m has 30."
    )
    assert dialog.publish_button.isEnabled() and dialog.outcome is None
    dialog.cancel_button.click()
    assert not dialog.isVisible()


def test_settings_test_button_asks_the_server_at_the_typed_url(qtbot, window, ollama_server):
    win, _jobs = window
    settings = win.settings_tab
    settings.editors["ollama_url"].setText(ollama_server.url)
    settings.test_ollama_button.click()
    label = settings.errors["ollama_url"]
    qtbot.waitUntil(lambda: "answers at" in label.text(), timeout=WAIT_MS)
    settings.editors["ollama_url"].setText("http://127.0.0.1:9")
    settings.test_ollama_button.click()
    qtbot.waitUntil(lambda: "not running" in label.text(), timeout=WAIT_MS)
    settings.editors["ollama_url"].setText("ftp://nowhere")
    settings.test_ollama_button.click()
    assert label.text() and "ftp" in label.text()


def test_a_qwen2_job_is_published_merged_from_the_dialog(qtbot, window, ollama_server):
    win, jobs = window
    context = win.context
    vocab = len_vocab(context, jobs["qwen"])
    ollama_server.add_model("tinyqwen", family="qwen2", **TINY, vocab_size=vocab)
    tab = win.jobs_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.model.row_of(jobs["qwen"]) >= 0, timeout=WAIT_MS)
    tab.select_job(jobs["qwen"])
    qtbot.waitUntil(tab.detail.publish_button.isEnabled, timeout=WAIT_MS)
    tab.detail.publish_button.click()
    dialog = tab.ollama_dialog
    qtbot.waitUntil(lambda: dialog.base_combo.count() > 0, timeout=WAIT_MS)
    dialog.base_combo.setCurrentText("tinyqwen")
    assert "takes merged weights only" in dialog.base_note.text()
    dialog.quantize_combo.setCurrentIndex(dialog.quantize_combo.findData("q8_0"))
    dialog.name_edit.setText("facts-qwen-ui")
    dialog.publish_button.click()
    qtbot.waitUntil(lambda: dialog.outcome is not None, timeout=120_000)
    assert dialog.outcome.route == "merged"
    log = dialog.log_view.toPlainText()
    assert "Merging the adapter" in log and "Uploaded" in log and "success" in log
    model = ollama_server.model("facts-qwen-ui")
    assert model.family == "qwen2" and model.quantization_level.upper() == "Q8_0"
