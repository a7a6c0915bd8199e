"""The Models tab against the stand-in Ollama server: listing, details, pull, delete, copy,
loaded models, and Ollama going away and coming back."""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from ui.models_tab import PULL_HINT, CopyModelDialog, ModelsTab
from ui.ollama_models import LoadedModelTable, OllamaModelTable

MIT = "MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge…"


@pytest.fixture
def tab(qtbot, ollama_connection):
    widget = ModelsTab(ollama_connection)
    qtbot.addWidget(widget)
    widget.resize(1180, 700)
    yield widget
    widget.shut_down()


def start(qtbot, tab, connection):
    connection.start()
    qtbot.waitUntil(lambda: tab.loaded, timeout=5000)


def names(tab):
    proxy = tab.proxy
    return [proxy.index(row, 0).data() for row in range(proxy.rowCount())]


def select(qtbot, tab, name):
    assert tab.select_model(name)
    qtbot.waitUntil(lambda: tab.details.facts["Architecture"].text() != "", timeout=5000)


def open_message_boxes():
    return [
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    ]


def test_lists_the_models_ollama_has(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_model("tiny", size=1_000_000, parameter_size="120K", quantization_level="F16")
    start(qtbot, tab, ollama_connection)
    assert sorted(names(tab)) == ["smollm2:135m", "tiny:latest"]
    assert tab.table_stack.currentWidget() is tab.table
    assert tab.count_label.text() == "2 models"
    row = tab.model.row_of("tiny:latest")
    cells = [tab.model.index(row, column).data() for column in range(6)]
    assert cells[:5] == ["tiny:latest", "llama", "120K", "F16", "1.0 MB"]
    assert len(cells[5]) == len("2026-01-01 12:00")
    assert tab.selected_name() is not None  # the first row is selected, and its details shown
    assert tab.pull_button.isEnabled() and tab.details.delete_button.isEnabled()


def test_sorts_by_size_by_value_and_filters(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_model("huge:7b", size=5_000_000_000, parameter_size="7B")
    ollama_server.add_model("mid:1b", size=900_000_000, parameter_size="1B")
    ollama_server.add_model("tiny:latest", size=1_000_000, parameter_size="120K")
    start(qtbot, tab, ollama_connection)
    tab.table.sortByColumn(OllamaModelTable.SIZE, Qt.SortOrder.AscendingOrder)
    # As text, "5.0 GB" would sort before "900.0 MB".
    assert names(tab) == ["tiny:latest", "smollm2:135m", "mid:1b", "huge:7b"]
    tab.table.sortByColumn(OllamaModelTable.PARAMETERS, Qt.SortOrder.DescendingOrder)
    assert names(tab) == ["huge:7b", "mid:1b", "smollm2:135m", "tiny:latest"]
    tab.filter_edit.setText("TIN")
    assert names(tab) == ["tiny:latest"]
    assert tab.count_label.text() == "1 of 4 models"
    tab.filter_edit.clear()
    assert len(names(tab)) == 4


def test_details_pane_is_filled_from_show(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_model("licensed:latest", context_length=2048, license=MIT)
    start(qtbot, tab, ollama_connection)
    select(qtbot, tab, "smollm2:135m")
    details = tab.details
    qtbot.waitUntil(lambda: "smollm2:135m" in details.title_label.text(), timeout=5000)
    facts = {name: label.text() for name, label in details.facts.items()}
    assert facts["Architecture"] == "llama"
    assert facts["Context length"] == "8,192 tokens"
    assert facts["Embedding length"] == "576"
    assert facts["Quantisation"] == "F16"
    assert facts["Parameters"].endswith("(135M)")
    assert facts["Family"] == "llama"
    assert facts["Parent model"] == "none"
    assert "completion" in facts["Capabilities"]
    assert "<|im_start|>" in details.template_text.toPlainText()
    assert "stop" in details.parameters_text.toPlainText()
    assert "SmolLM" in details.system_text.toPlainText()
    assert details.template_text.isReadOnly()

    # Select one model and then another at once: only the latest answer is shown.
    tab.select_model("licensed:latest")
    tab.select_model("smollm2:135m")
    tab.select_model("licensed:latest")
    qtbot.waitUntil(lambda: details.facts["Context length"].text() == "2,048 tokens", timeout=5000)
    assert "licensed:latest" in details.title_label.text()
    assert details.facts["License"].text() == "MIT License …"
    assert details.license_text.toPlainText() == MIT
    assert details.license_text.isReadOnly()


def test_pull_shows_progress_then_lists_the_model(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_registry_model("smollm2:360m", layer_sizes=(40_000_000, 2_000))
    ollama_server.pull_chunk_delay = 0.05
    start(qtbot, tab, ollama_connection)
    tab.pull_edit.setText("smollm2:360m")
    with qtbot.waitSignal(tab.models_changed, timeout=5000):
        qtbot.mouseClick(tab.pull_button, Qt.MouseButton.LeftButton)
        assert tab.pulling and not tab.pull_button.isEnabled()
        assert tab.progress_bar.maximum() == 0  # busy: no layer has told its size yet
        qtbot.waitUntil(lambda: tab.progress_bar.maximum() == 1000, timeout=5000)
        qtbot.waitUntil(lambda: tab.progress_bar.value() > 0, timeout=5000)
        assert "MB" in tab.progress_bar.format()
        assert "pulling" in tab.pull_label.text()
    qtbot.waitUntil(lambda: "smollm2:360m" in names(tab), timeout=5000)
    assert ollama_server.has_model("smollm2:360m")
    assert not tab.pulling and tab.pull_button.isEnabled() and tab.progress_bar.isHidden()
    assert tab.pull_label.text() == "Pulled smollm2:360m."
    qtbot.waitUntil(lambda: tab.selected_name() == "smollm2:360m", timeout=5000)


def test_pull_cancelled_midway_leaves_nothing(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_registry_model("smollm2:360m", layer_sizes=(40_000_000, 2_000))
    ollama_server.pull_chunk_delay = 0.4
    start(qtbot, tab, ollama_connection)
    tab.pull_edit.setText("smollm2:360m")
    qtbot.mouseClick(tab.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "pulling " in tab.pull_label.text(), timeout=5000)
    with qtbot.waitSignal(tab.status_message, timeout=5000) as said:
        qtbot.mouseClick(tab.cancel_button, Qt.MouseButton.LeftButton)
    assert said.args == ["The pull of smollm2:360m was cancelled."]
    assert not tab.pulling
    assert tab.pull_button.isEnabled() and tab.pull_edit.isEnabled()
    assert tab.progress_bar.isHidden() and tab.cancel_button.isHidden()
    assert not ollama_server.has_model("smollm2:360m")
    assert "smollm2:360m" not in names(tab)


def test_pull_of_an_unknown_model_says_why(qtbot, tab, ollama_connection, ollama_server):
    start(qtbot, tab, ollama_connection)
    qtbot.mouseClick(tab.pull_button, Qt.MouseButton.LeftButton)
    assert tab.pull_label.text() == PULL_HINT
    tab.pull_edit.setText("nope:1b")
    expected = 'Ollama could not pull "nope:1b": pull model manifest: file does not exist.'
    with qtbot.waitSignal(tab.status_message, timeout=5000) as said:
        tab.pull_edit.returnPressed.emit()
    assert said.args == [expected]
    qtbot.waitUntil(lambda: not tab.pulling, timeout=5000)
    assert tab.pull_label.text() == expected and not tab.pull_label.isHidden()
    assert tab.progress_bar.isHidden() and tab.cancel_button.isHidden()
    assert not open_message_boxes()
    assert tab.pull_button.isEnabled()


def test_delete_asks_then_deletes(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_model("tiny:latest")
    start(qtbot, tab, ollama_connection)
    select(qtbot, tab, "tiny:latest")
    qtbot.mouseClick(tab.details.delete_button, Qt.MouseButton.LeftButton)
    box = tab.dialog
    assert isinstance(box, QMessageBox)
    assert "tiny:latest" in box.text() and "cannot be undone" in box.text()
    cancel = box.button(QMessageBox.StandardButton.Cancel)
    cancel.click()
    assert ollama_server.has_model("tiny:latest")

    qtbot.mouseClick(tab.details.delete_button, Qt.MouseButton.LeftButton)
    box = tab.dialog
    assert isinstance(box, QMessageBox)
    delete = next(button for button in box.buttons() if button.text() == "Delete")
    with qtbot.waitSignal(tab.models_changed, timeout=5000):
        delete.click()
    assert not ollama_server.has_model("tiny:latest")
    qtbot.waitUntil(lambda: "tiny:latest" not in names(tab), timeout=5000)
    assert names(tab) == ["smollm2:135m"]


def test_copy_under_a_new_name(qtbot, tab, ollama_connection, ollama_server):
    start(qtbot, tab, ollama_connection)
    select(qtbot, tab, "smollm2:135m")
    qtbot.mouseClick(tab.details.copy_button, Qt.MouseButton.LeftButton)
    dialog = tab.dialog
    assert isinstance(dialog, CopyModelDialog) and dialog.isVisible()
    assert dialog.name_edit.text() == "smollm2-copy:135m"

    dialog.name_edit.setText("   ")
    assert not dialog.ok_button.isEnabled()
    dialog.accept()
    assert dialog.error_label.text() == "Type a name for the copy." and dialog.isVisible()

    dialog.name_edit.setText("bad name")
    dialog.accept()
    qtbot.waitUntil(lambda: not dialog.error_label.isHidden(), timeout=5000)
    assert dialog.error_label.text() == (
        'Ollama refused to copy "smollm2:135m" to "bad name": destination "bad name" is invalid.'
    )
    assert dialog.isVisible() and dialog.name_edit.isEnabled()

    dialog.name_edit.setText("my-smol:latest")
    with qtbot.waitSignal(tab.models_changed, timeout=5000):
        dialog.accept()
    assert not dialog.isVisible()
    assert ollama_server.has_model("my-smol:latest") and ollama_server.has_model("smollm2:135m")
    qtbot.waitUntil(lambda: tab.selected_name() == "my-smol:latest", timeout=5000)
    assert sorted(names(tab)) == ["my-smol:latest", "smollm2:135m"]


def test_loaded_models_after_a_generate(qtbot, tab, ollama_connection, ollama_server):
    start(qtbot, tab, ollama_connection)
    qtbot.waitUntil(lambda: tab.loaded_stack.currentWidget() is tab.loaded_empty_label)
    body = {"model": "smollm2:135m", "prompt": "", "stream": False, "keep_alive": -1}
    answer = httpx.post(f"{ollama_server.url}/api/generate", json=body, timeout=5)
    assert answer.json()["done_reason"] == "load"
    tab.refresh()
    qtbot.waitUntil(lambda: tab.loaded_model.rowCount() == 1, timeout=5000)
    cells = [tab.loaded_model.index(0, column).data() for column in range(4)]
    assert cells == ["smollm2:135m", "270.9 MB", "none (CPU)", "until unloaded"]
    assert tab.loaded_stack.currentWidget() is tab.loaded_table
    assert tab.loaded_title.text() == "<b>Loaded in memory (1)</b>"

    # The slow refresh of loaded models runs only while the tab is on screen.
    assert not tab._loaded_timer.isActive()
    tab.show()
    assert tab._loaded_timer.isActive()
    tab.hide()
    assert not tab._loaded_timer.isActive()


def test_ollama_going_down_and_coming_back(qtbot, tab, ollama_connection, ollama_server):
    start(qtbot, tab, ollama_connection)
    ollama_server.stop()
    qtbot.waitUntil(lambda: tab.table_stack.currentWidget() is tab.empty_label, timeout=5000)
    assert "Ollama is not running at" in tab.empty_label.text()
    assert "ollama serve" in tab.empty_label.text()
    assert tab.model.rowCount() == 0
    for widget in (tab.pull_button, tab.pull_edit, tab.details.delete_button):
        assert not widget.isEnabled()
    assert tab.details.copy_button.isEnabled() is False

    ollama_server.start()
    qtbot.waitUntil(lambda: tab.table_stack.currentWidget() is tab.table, timeout=5000)
    assert names(tab) == ["smollm2:135m"]
    assert tab.pull_button.isEnabled()


def test_an_error_listing_models_is_one_sentence(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.fail_before_stream("/api/tags", 500, "boom")
    with qtbot.waitSignal(tab.status_message, timeout=5000) as said:
        ollama_connection.start()
    expected = "Ollama failed to list its models: boom."
    assert said.args == [expected]
    assert tab.table_stack.currentWidget() is tab.empty_label
    assert tab.empty_label.text() == expected

    tab.refresh()
    qtbot.waitUntil(lambda: tab.table_stack.currentWidget() is tab.table, timeout=5000)

    # With models listed already, they stay, and the sentence shows above them.
    ollama_server.fail_before_stream("/api/tags", 500, "boom")
    tab.refresh()
    qtbot.waitUntil(lambda: not tab.list_notice.isHidden(), timeout=5000)
    assert tab.list_notice.text() == expected
    assert names(tab) == ["smollm2:135m"]
    tab.refresh()
    qtbot.waitUntil(tab.list_notice.isHidden, timeout=5000)


def test_models_pass_the_model_tester(qtbot, qtmodeltester, tab, ollama_connection, ollama_server):
    ollama_server.add_model("tiny:latest", size=1_000)
    start(qtbot, tab, ollama_connection)
    httpx.post(
        f"{ollama_server.url}/api/generate",
        json={"model": "tiny:latest", "prompt": "", "stream": False},
        timeout=5,
    )
    tab.refresh()
    qtbot.waitUntil(lambda: tab.loaded_model.rowCount() == 1, timeout=5000)
    qtmodeltester.check(tab.model)
    qtmodeltester.check(tab.proxy)
    qtmodeltester.check(tab.loaded_model)
    qtmodeltester.check(LoadedModelTable())
    qtmodeltester.check(OllamaModelTable())


def test_deleting_the_tab_mid_pull_stops_the_pull(qtbot, ollama_connection, ollama_server):
    ollama_server.add_registry_model("smollm2:360m", layer_sizes=(40_000_000, 2_000))
    ollama_server.pull_chunk_delay = 0.4
    widget = ModelsTab(ollama_connection)
    start(qtbot, widget, ollama_connection)
    widget.pull("smollm2:360m")
    qtbot.waitUntil(lambda: "pulling " in widget.pull_label.text(), timeout=5000)
    tasks = widget._tasks
    gone = []
    widget.destroyed.connect(lambda: gone.append(True))
    widget.deleteLater()
    qtbot.waitUntil(lambda: bool(gone) and not tasks.busy, timeout=5000)
    assert not ollama_server.has_model("smollm2:360m")


def test_shut_down_cancels_the_pull(qtbot, tab, ollama_connection, ollama_server):
    ollama_server.add_registry_model("smollm2:360m", layer_sizes=(40_000_000, 2_000))
    ollama_server.pull_chunk_delay = 0.4
    start(qtbot, tab, ollama_connection)
    tab.pull("smollm2:360m")
    qtbot.waitUntil(lambda: "pulling " in tab.pull_label.text(), timeout=5000)
    tab.shut_down()
    qtbot.waitUntil(lambda: not tab.pulling, timeout=5000)
    assert not ollama_server.has_model("smollm2:360m")
    tab.refresh()  # ignored after shut_down: no new work starts
    assert not tab._tasks.busy
