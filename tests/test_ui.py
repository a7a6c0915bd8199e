"""The window, driven as a person would: tabs, shortcuts, drop and dialog imports, preview,
cancel, rename, delete, settings. Offscreen; any Qt warning fails the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from app.context import AppContext
from app.datasets.repository import list_datasets
from ui.dataset_models import DatasetTableModel, RecordPreviewModel
from ui.import_dialog import ImportDialog
from ui.main_window import MainWindow

WAIT_MS = 30_000


@pytest.fixture
def window(qtbot, context):
    win = MainWindow(context)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    assert win.runner.shutdown(), "background work did not finish"


def _drop(window: MainWindow, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(
        QPointF(QPoint(50, 50)),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    assert event.isAccepted()


def _open_import_dialog(window: MainWindow) -> ImportDialog:
    dialog = window.datasets_tab._dialog
    assert isinstance(dialog, ImportDialog)
    return dialog


def _import_through_dialog(qtbot, window: MainWindow) -> None:
    dialog = _open_import_dialog(window)
    qtbot.waitUntil(dialog.import_button.isEnabled, timeout=WAIT_MS)
    count = window.datasets_tab.model.rowCount()
    dialog.import_button.click()
    qtbot.waitUntil(lambda: window.datasets_tab.model.rowCount() == count + 1, timeout=WAIT_MS)


def test_window_has_the_five_tabs_shortcuts_and_an_icon(window):
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Dashboard", "Datasets", "Jobs", "Models", "Settings"]
    assert window.import_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    assert window.settings_action.shortcut() == QKeySequence("Ctrl+,")
    assert window.quit_action.shortcut() == QKeySequence("Ctrl+Q")
    assert not window.windowIcon().isNull()
    window.settings_action.trigger()
    assert window.tabs.currentWidget() is window.settings_tab


def test_drop_a_file_then_import_it_through_the_dialog(qtbot, window, real_data):
    _drop(window, [real_data / "glaive_toolcall_en_demo.json"])
    dialog = _open_import_dialog(window)
    qtbot.waitUntil(dialog.import_button.isEnabled, timeout=WAIT_MS)
    assert dialog.inspection is not None and dialog.inspection.format == "sharegpt"
    assert dialog.sample_table.rowCount() > 0
    _import_through_dialog(qtbot, window)
    tab = window.datasets_tab
    dataset = tab.selected_dataset()
    assert dataset is not None and (dataset.format, dataset.rows) == ("sharegpt", 300)
    assert "300" in tab.summary_label.text()
    assert tab.preview_model.rowCount() > 0
    original, normalised = tab.preview_model.record_at(0)
    assert "conversations" in original and "messages" in normalised
    assert "300 records" in window.dashboard_tab.summary_label.text().replace("<b>", "").replace(
        "</b>", ""
    )


def test_import_through_the_file_dialog(qtbot, window, real_data):
    window.import_action.trigger()
    file_dialog = window.datasets_tab._dialog
    assert isinstance(file_dialog, QFileDialog)
    file_dialog.filesSelected.emit([str(real_data / "c4_demo.jsonl")])
    _import_through_dialog(qtbot, window)
    assert window.datasets_tab.selected_dataset().format == "text"


def test_overriding_the_format_and_mapping_csv_columns(qtbot, window, tmp_path):
    csv_path = tmp_path / "qa.csv"
    csv_path.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n")
    window.datasets_tab.import_files([csv_path])
    dialog = _open_import_dialog(window)
    qtbot.waitUntil(dialog.import_button.isEnabled, timeout=WAIT_MS)
    assert dialog.mapping_group.isVisibleTo(dialog)
    _import_through_dialog(qtbot, window)
    dataset = window.datasets_tab.selected_dataset()
    assert dataset.rows == 2
    record = window.datasets_tab.preview_model.record_at(1)[1]
    assert [m["content"] for m in record["messages"]] == ["Capital of France?", "Paris"]


def test_a_bad_file_is_explained_and_cannot_be_imported(qtbot, window, tmp_path, home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    window.datasets_tab.import_files([bad])
    dialog = _open_import_dialog(window)
    qtbot.waitUntil(lambda: bool(dialog.problem_label.text()), timeout=WAIT_MS)
    assert "bad.jsonl" in dialog.problem_label.text()
    assert not dialog.import_button.isEnabled()
    dialog.reject()
    assert list_datasets(window.context.database) == []


def test_cancelling_an_import_leaves_nothing_behind(qtbot, window, tmp_path, home):
    big = tmp_path / "big.jsonl"
    line = json.dumps({"instruction": "say something long " * 5, "output": "words " * 40})
    big.write_text((line + "\n") * 200_000)
    tab = window.datasets_tab
    from app.datasets.importer import ImportOptions

    messages: list[str] = []
    tab.status_message.connect(messages.append)
    tab.start_import(big, ImportOptions())
    assert tab.cancel_button.isVisibleTo(tab)
    tab.cancel_button.click()
    qtbot.waitUntil(lambda: not tab.importing, timeout=WAIT_MS)
    assert messages == ["Import cancelled; nothing was kept."]
    assert list_datasets(window.context.database) == []
    assert list(home.datasets.iterdir()) == []


def test_rename_and_delete_with_confirmation(qtbot, window, real_data, home):
    window.datasets_tab.import_files([real_data / "identity.json"])
    _import_through_dialog(qtbot, window)
    tab = window.datasets_tab
    dataset = tab.selected_dataset()
    tab.rename(dataset.id, "My identity set")
    qtbot.waitUntil(lambda: tab.selected_dataset().name == "My identity set", timeout=WAIT_MS)
    tab.delete_button.click()
    box = tab._dialog
    assert isinstance(box, QMessageBox)
    assert "cannot be undone" in box.text()
    delete = next(b for b in box.buttons() if b.text() == "Delete")
    delete.click()
    qtbot.waitUntil(lambda: tab.model.rowCount() == 0, timeout=WAIT_MS)
    assert not (home.datasets / dataset.id).exists()


def test_split_dialog_changes_the_validation_split(qtbot, window, real_data):
    window.datasets_tab.import_files([real_data / "alpaca_en_demo.json"])
    _import_through_dialog(qtbot, window)
    tab = window.datasets_tab
    tab.split_button.click()
    dialog = tab._dialog
    dialog.fraction.setValue(0.2)
    dialog.seed.setValue(7)
    dialog.accept()
    qtbot.waitUntil(lambda: tab.selected_dataset().validation_rows == 200, timeout=WAIT_MS)
    assert tab.selected_dataset().split_seed == 7


def test_settings_refuse_invalid_values_beside_the_field_and_persist(qtbot, window, home):
    tab = window.settings_tab
    tab.editors["max_concurrent_jobs"].setText("0")
    tab.editors["ollama_url"].setText("not a url")
    tab.save_button.click()
    assert "at least 1" in tab.errors["max_concurrent_jobs"].text()
    assert "URL" in tab.errors["ollama_url"].text()
    assert tab.errors["import_size_limit_mb"].text() == ""
    tab.editors["max_concurrent_jobs"].setText("2")
    tab.editors["ollama_url"].setText("http://127.0.0.1:11555")
    tab.editors["hyperparameters.learning_rate"].setText("0.0001")
    tab.save_button.click()
    qtbot.waitUntil(lambda: tab.saved_label.text() == "Saved.", timeout=WAIT_MS)
    reopened = AppContext.open(home.root)
    settings = reopened.settings.load()
    reopened.close()
    assert settings.max_concurrent_jobs == 2
    assert settings.ollama_url == "http://127.0.0.1:11555"
    assert settings.hyperparameters.learning_rate == 0.0001


def test_dataset_models_pass_the_model_tester(qtmodeltester, window, qtbot, real_data):
    window.datasets_tab.import_files([real_data / "v1_sft_demo.jsonl"])
    _import_through_dialog(qtbot, window)
    qtmodeltester.check(window.datasets_tab.model)
    preview = window.datasets_tab.preview_model
    qtmodeltester.check(preview)
    assert isinstance(preview, RecordPreviewModel)
    assert isinstance(window.datasets_tab.model, DatasetTableModel)


def test_preview_pages_lazily(tmp_path, qtmodeltester):
    records = tmp_path / "records.jsonl"
    source = tmp_path / "source.jsonl"
    records.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(450)))
    source.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(450)))
    model = RecordPreviewModel(source, records)
    assert model.rowCount() == 0 and model.canFetchMore()
    model.fetchMore()
    assert model.rowCount() == RecordPreviewModel.PAGE
    model.fetchMore()
    model.fetchMore()
    assert model.rowCount() == 450 and not model.canFetchMore()
    qtmodeltester.check(model)


def test_about_dialog_names_the_versions(window, qtbot):
    window.about_action.trigger()
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)]
    assert any("PySide6" in b.text() and "Python" in b.text() for b in boxes)
    for box in boxes:
        box.close()


def test_quit_closes_the_window_and_stops_background_work(qtbot, context):
    win = MainWindow(context)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.quit_action.trigger()
    assert not win.isVisible()
    assert not win.runner.busy


def test_qt_calls_do_not_leak_references_to_none_or_true(qtbot):
    """PySide6 6.12.0 dropped a reference to None on every void call and to True on every
    emit(); the interpreter then aborted mid-session. pyproject.toml excludes that release."""
    import sys

    from PySide6.QtWidgets import QPushButton

    button = QPushButton()
    qtbot.addWidget(button)
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(200):
        button.setEnabled(True)
        button.clicked.emit()
    assert sys.getrefcount(None) - none_before > -50
    assert sys.getrefcount(True) - true_before > -50
