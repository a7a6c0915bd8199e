"""The window's part of running jobs on a Ray cluster, driven as a person would: the Settings
tab's Clusters section (add, edit, remove, check against the stand-in Ray head served over real
HTTP on 127.0.0.1), the token in the OS keyring and never in the database, and the New Job
dialog's Run on choice. A real database per test; offscreen; any Qt warning fails the test."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from app import APP_ID
from app.datasets.importer import ImportOptions, import_dataset
from app.executors.clusters import Cluster, ClusterStore, make_cluster
from app.executors.ray import RayExecutor
from app.jobs.lifecycle import JobStatus
from app.jobs.service import get_job
from tests.conftest import REAL_DATA
from tests.ray_head import VERSION, FakeHead, ServedHead, serve_over_http
from ui.cluster_dialog import ClusterDialog
from ui.clusters_panel import EMPTY_TEXT, ClustersPanel
from ui.job_detail import JobDetailPane
from ui.new_job_dialog import CLUSTER_BUILD_NOTE, THIS_MACHINE, JobDraft, NewJobDialog
from ui.settings_tab import SettingsTab

WAIT_MS = 30_000
TOKEN = "s3cret-token-0f9e8d"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def settings_tab(qtbot, context, runner) -> SettingsTab:
    tab = SettingsTab(context, runner)
    qtbot.addWidget(tab)
    tab.resize(1180, 700)
    tab.show()
    qtbot.waitExposed(tab)
    qtbot.waitUntil(lambda: tab.clusters_panel.loaded, timeout=WAIT_MS)
    return tab


@pytest.fixture
def panel(settings_tab) -> ClustersPanel:
    return settings_tab.clusters_panel


@pytest.fixture
def store(context) -> ClusterStore:
    return ClusterStore(context.database)


@pytest.fixture
def served_head() -> Iterator[ServedHead]:
    with serve_over_http(FakeHead(), wait_s=WAIT_MS / 1000) as served:
        yield served


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fill(dialog: ClusterDialog, **fields: object) -> None:
    values = {"name": "lab", "url": "127.0.0.1:8265", "storage": "/srv/shared/mtm"}
    values |= {"token": "", "token_env": "", "gpus": 0, "cpus": 1}
    values |= fields
    for key in ("name", "url", "storage", "token", "token_env"):
        editor = getattr(dialog, f"{key}_edit")
        if not editor.isReadOnly():
            editor.setText(str(values[key]))
    dialog.gpus_spin.setValue(float(values["gpus"]))  # type: ignore[arg-type]
    dialog.cpus_spin.setValue(float(values["cpus"]))  # type: ignore[arg-type]


def _open_dialog(panel: ClustersPanel, button: str = "add") -> ClusterDialog:
    getattr(panel, f"{button}_button").click()
    dialog = panel.dialog
    assert isinstance(dialog, ClusterDialog) and dialog.isVisible()
    return dialog


def _save(qtbot, panel: ClustersPanel, dialog: ClusterDialog) -> None:
    with qtbot.waitSignal(panel.clusters_changed, timeout=WAIT_MS):
        dialog.save_button.click()


def _cells(panel: ClustersPanel, row: int = 0) -> list[str]:
    table = panel.table
    return [table.item(row, column).text() for column in range(table.columnCount())]


def _database_bytes(context) -> bytes:
    """The database file and its write-ahead log (WAL mode keeps recent writes there)."""
    files = [context.home.database, Path(f"{context.home.database}-wal")]
    return b"".join(path.read_bytes() for path in files if path.exists())


def _added(qtbot, panel: ClustersPanel, store: ClusterStore, cluster: Cluster, token=None):
    assert store.add(cluster, token) is True
    with qtbot.waitSignal(panel.clusters_changed, timeout=WAIT_MS):
        panel.refresh(select=cluster.name)
    return cluster


# --- add -----------------------------------------------------------------------------------


def test_adding_a_cluster_keeps_its_token_in_the_keyring_and_not_in_the_database(
    qtbot, panel, store, context, memory_keyring, tmp_path
):
    assert panel.status_label.text() == EMPTY_TEXT
    assert not panel.edit_button.isEnabled() and not panel.check_button.isEnabled()
    dialog = _open_dialog(panel)
    assert dialog.token_edit.echoMode() == dialog.token_edit.EchoMode.Password
    for editor in (dialog.name_edit, dialog.url_edit, dialog.storage_edit, dialog.token_edit):
        assert editor.toolTip()
    assert dialog.token_env_edit.toolTip() and dialog.gpus_spin.toolTip()
    assert dialog.cpus_spin.toolTip()
    shared = tmp_path / "shared"
    _fill(dialog, storage=shared, token=TOKEN, token_env="LAB_TOKEN", gpus=1, cpus=4)
    _save(qtbot, panel, dialog)

    cluster = store.get("lab")
    assert (cluster.url, cluster.storage, cluster.gpus, cluster.cpus) == (
        "http://127.0.0.1:8265",
        str(shared),
        1,
        4,
    )
    assert cluster.token_env == "LAB_TOKEN"
    assert memory_keyring.passwords == {(APP_ID, "ray-cluster:lab"): TOKEN}
    stored = _database_bytes(context)
    assert b"LAB_TOKEN" in stored and str(shared).encode() in stored  # the row is written…
    assert TOKEN.encode() not in stored  # …and the token is not in it
    assert panel.table.rowCount() == 1
    assert _cells(panel) == ["lab", "http://127.0.0.1:8265", str(shared), "1", "4", "keyring"]
    assert "its token is in the OS keyring" in panel.status_label.text()
    assert panel.edit_button.isEnabled() and panel.check_button.isEnabled()


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"name": "bad name"}, "The cluster's name is not valid: use letters, digits"),
        ({"url": "ftp://head"}, '"ftp://head" is not a Ray dashboard URL'),
        ({"url": "http://head:8265/dashboard"}, "it must have nothing after the port"),
        ({"storage": "relative/folder"}, 'The storage path "relative/folder" is relative'),
        ({"storage": "s3://"}, '"s3://" names no bucket'),
        ({"token_env": "not a variable"}, "The cluster's token_env is not valid"),
    ],
)
def test_a_bad_field_is_told_in_the_dialog_and_nothing_is_saved(
    qtbot, panel, store, runner, memory_keyring, fields, sentence
):
    dialog = _open_dialog(panel)
    _fill(dialog, token=TOKEN, **fields)
    dialog.save_button.click()
    assert dialog.isVisible()
    text = dialog.error_label.text()
    assert sentence in text and text.endswith("."), text
    assert not runner.busy  # nothing went to the store
    assert store.all() == [] and memory_keyring.passwords == {}
    dialog.reject()
    assert panel.table.rowCount() == 0


def test_adding_a_name_that_is_taken_is_refused(qtbot, panel, store, memory_keyring, tmp_path):
    _added(qtbot, panel, store, make_cluster(name="lab", url="h", storage=str(tmp_path)))
    dialog = _open_dialog(panel)
    _fill(dialog, url="other:8265")
    dialog.save_button.click()
    assert "There is already a cluster named lab" in dialog.error_label.text()
    dialog.reject()
    assert store.get("lab").url == "http://h:8265"


def test_a_plain_http_url_to_another_machine_is_warned_about(panel, memory_keyring):
    dialog = _open_dialog(panel)
    dialog.url_edit.setText("10.0.0.5:8265")
    assert dialog.url_warning.isVisibleTo(dialog)
    assert "unencrypted" in dialog.url_warning.text()
    dialog.url_edit.setText("https://10.0.0.5")
    assert not dialog.url_warning.isVisibleTo(dialog)
    dialog.reject()


# --- the keyring missing -------------------------------------------------------------------


def test_without_a_keyring_the_token_is_read_from_its_variable(
    qtbot, panel, store, context, no_keyring, tmp_path, monkeypatch
):
    monkeypatch.delenv("LAB_TOKEN", raising=False)
    dialog = _open_dialog(panel)
    _fill(dialog, storage=tmp_path, token=TOKEN, token_env="LAB_TOKEN")
    _save(qtbot, panel, dialog)
    assert store.get("lab").token_env == "LAB_TOKEN"
    note = panel.status_label.text()
    assert note == (
        "Saved cluster lab, but there is no OS keyring here to keep its token, so it is read "
        "from $LAB_TOKEN each time: set it wherever the app runs."
    )
    assert _cells(panel)[-1] == "from $LAB_TOKEN (not set)"
    assert TOKEN.encode() not in _database_bytes(context)


def test_without_a_keyring_or_a_variable_the_user_is_asked_for_one(
    qtbot, panel, store, no_keyring, tmp_path
):
    dialog = _open_dialog(panel)
    _fill(dialog, storage=tmp_path, token=TOKEN)
    _save(qtbot, panel, dialog)
    assert store.token(store.get("lab")) is None
    assert "no OS keyring here to keep its token: edit the cluster to give a token " in (
        panel.status_label.text()
    )
    assert _cells(panel)[-1] == "none"


# --- edit and remove -----------------------------------------------------------------------


def test_editing_with_the_token_left_empty_keeps_it(qtbot, panel, store, memory_keyring, tmp_path):
    cluster = make_cluster(name="lab", url="h", storage=str(tmp_path), gpus=1)
    _added(qtbot, panel, store, cluster, TOKEN)
    assert _cells(panel)[-1] == "keyring"
    dialog = _open_dialog(panel, "edit")
    assert dialog.name_edit.text() == "lab" and dialog.name_edit.isReadOnly()
    assert dialog.url_edit.text() == "http://h:8265" and dialog.gpus_spin.value() == 1
    assert dialog.token_edit.text() == "" and "keep" in dialog.token_edit.placeholderText()
    dialog.url_edit.setText("https://head.example.org")
    dialog.cpus_spin.setValue(8)
    _save(qtbot, panel, dialog)
    edited = store.get("lab")
    assert (edited.url, edited.cpus, edited.gpus) == ("https://head.example.org", 8, 1)
    assert store.token(edited) == TOKEN
    assert panel.status_label.text() == "Saved cluster lab."
    dialog = _open_dialog(panel, "edit")
    dialog.token_edit.setText("a-new-token")
    _save(qtbot, panel, dialog)
    assert store.token(store.get("lab")) == "a-new-token"


def test_remove_asks_first_then_forgets_the_cluster_and_its_token(
    qtbot, panel, store, memory_keyring, tmp_path
):
    _added(qtbot, panel, store, make_cluster(name="lab", url="h", storage=str(tmp_path)), TOKEN)
    panel.remove_button.click()
    (box,) = panel.findChildren(QMessageBox)
    assert "Remove cluster lab and forget its token?" in box.text()
    box.reject()  # Cancel: nothing happens
    qtbot.waitUntil(lambda: not box.isVisible(), timeout=WAIT_MS)
    assert store.exists("lab")
    box.deleteLater()
    panel.remove_button.click()
    box = next(b for b in panel.findChildren(QMessageBox) if b.isVisible())
    with qtbot.waitSignal(panel.clusters_changed, timeout=WAIT_MS):
        next(b for b in box.buttons() if b.text() == "Remove").click()
    assert store.all() == [] and memory_keyring.passwords == {}
    assert panel.table.rowCount() == 0
    assert panel.status_label.text() == "Removed cluster lab and its token."


# --- check ---------------------------------------------------------------------------------


def test_check_asks_the_head_off_the_gui_thread_and_shows_its_version(
    qtbot, panel, store, served_head, memory_keyring, tmp_path, monkeypatch
):
    threads: list[threading.Thread] = []
    real_check = RayExecutor.check

    def check(self: RayExecutor) -> str:
        threads.append(threading.current_thread())
        return real_check(self)

    monkeypatch.setattr(RayExecutor, "check", check)
    served_head.head.token = TOKEN
    cluster = make_cluster(name="lab", url=served_head.url, storage=str(tmp_path / "shared"))
    _added(qtbot, panel, store, cluster, TOKEN)
    served_head.gate.clear()  # the head holds its answer: the window must go on meanwhile
    panel.check_button.click()
    assert panel.status_label.text() == "Checking lab…"
    assert not panel.check_button.isEnabled() and panel.add_button.isEnabled()
    qtbot.waitUntil(served_head.arrived.is_set, timeout=WAIT_MS)
    qtbot.wait(50)  # the GUI thread's loop spins while the check waits for the head
    assert panel.status_label.text() == "Checking lab…"
    served_head.gate.set()
    qtbot.waitUntil(panel.check_button.isEnabled, timeout=WAIT_MS)
    assert panel.status_label.text() == (
        f"Cluster lab answers: Ray {VERSION['ray_version']} (Jobs API {VERSION['version']}); "
        "its storage can be written."
    )
    assert threads and threads[0] is not threading.main_thread()
    (request,) = served_head.head.requests
    assert request.url.path == "/api/version"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_check_of_a_closed_port_says_the_cluster_cannot_be_reached(
    qtbot, panel, store, memory_keyring, tmp_path
):
    url = f"http://127.0.0.1:{_closed_port()}"
    _added(qtbot, panel, store, make_cluster(name="gone", url=url, storage=str(tmp_path)))
    panel.check_button.click()
    qtbot.waitUntil(panel.check_button.isEnabled, timeout=WAIT_MS)
    text = panel.status_label.text()
    assert text.startswith(f"The Ray cluster at {url} cannot be reached (")
    assert text.endswith("; check the URL and that the head is running.")


def test_check_with_a_wrong_token_says_so(
    qtbot, panel, store, served_head, memory_keyring, tmp_path
):
    served_head.head.token = TOKEN
    cluster = make_cluster(name="lab", url=served_head.url, storage=str(tmp_path))
    _added(qtbot, panel, store, cluster, "the-wrong-one")
    panel.check_button.click()
    qtbot.waitUntil(panel.check_button.isEnabled, timeout=WAIT_MS)
    assert "refused the token (HTTP 403)" in panel.status_label.text()


# --- the New Job dialog --------------------------------------------------------------------


@pytest.fixture
def dataset(context):
    return import_dataset(
        context.database, context.home, REAL_DATA / "identity.json", ImportOptions(name="ids")
    )


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache with MODEL_ID's config.json, so the memory estimate has a shape."""
    cache = tmp_path / "hf-hub"
    snapshot = cache / f"models--{MODEL_ID.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    config = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30}
    config |= {"vocab_size": 49152, "intermediate_size": 1536, "num_attention_heads": 9}
    (snapshot / "config.json").write_text(json.dumps(config | {"num_key_value_heads": 3}))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _new_job_dialog(qtbot, context, runner) -> NewJobDialog:
    dialog = NewJobDialog(context, runner, [])
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.loaded, timeout=WAIT_MS)
    return dialog


def test_the_new_job_dialog_queues_a_job_for_the_chosen_cluster(
    qtbot, context, runner, store, dataset, hf_cache, memory_keyring, tmp_path
):
    store.add(make_cluster(name="lab", url="h", storage=str(tmp_path), gpus=1, cpus=4))
    dialog = _new_job_dialog(qtbot, context, runner)
    combo = dialog.run_on_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        THIS_MACHINE,
        "lab: http://h:8265 (1 GPU and 4 CPUs a job)",
    ]
    assert dialog.target is None and not dialog.run_on_hint.isVisibleTo(dialog)
    dialog.base_model_combo.setCurrentText(MODEL_ID)
    qtbot.waitUntil(lambda: "an estimate" in dialog.estimate_label.text(), timeout=WAIT_MS)
    combo.setCurrentIndex(1)
    assert dialog.target == "lab"
    hint = dialog.run_on_hint.text()
    assert dialog.run_on_hint.isVisibleTo(dialog) and "1 GPU and 4 CPUs" in hint
    assert "This machine's memory and GPUs do not matter" in hint
    qtbot.waitUntil(
        lambda: dialog.estimate_label.text().startswith("On lab's nodes:"), timeout=WAIT_MS
    )
    assert "of GPU memory" in dialog.estimate_label.text()
    assert dialog.create_button.isEnabled()
    with qtbot.waitSignal(dialog.job_created, timeout=WAIT_MS) as created:
        dialog.create_button.click()
    job = get_job(context.database, created.args[0].id)
    assert job.status == JobStatus.QUEUED and job.spec["target"] == "lab"
    detail = JobDetailPane(context, runner)
    qtbot.addWidget(detail)
    detail.show_job(job)
    assert "runs on cluster <b>lab</b>" in detail.facts_label.text()


def test_this_machine_stays_the_default_target(
    qtbot, context, runner, store, dataset, hf_cache, tmp_path
):
    store.add(make_cluster(name="lab", url="h", storage=str(tmp_path)))
    dialog = _new_job_dialog(qtbot, context, runner)
    dialog.base_model_combo.setCurrentText(MODEL_ID)
    dialog.on_form_changed()
    with qtbot.waitSignal(dialog.job_created, timeout=WAIT_MS) as created:
        dialog.create_button.click()
    job = get_job(context.database, created.args[0].id)
    assert job.spec["target"] is None
    detail = JobDetailPane(context, runner)
    qtbot.addWidget(detail)
    detail.show_job(job)
    assert "runs on <b>this machine</b>" in detail.facts_label.text()


def test_a_cluster_job_needs_a_hugging_face_id_and_zero_gpus_warn_about_qlora(
    qtbot, context, runner, store, dataset, hf_cache, tmp_path
):
    store.add(make_cluster(name="cpu-only", url="h", storage=str(tmp_path), gpus=0))
    dialog = _new_job_dialog(qtbot, context, runner)
    dialog.base_model_combo.setCurrentText(str(tmp_path))
    dialog.on_form_changed()
    assert dialog.create_button.isEnabled()  # a local folder is fine for this machine
    dialog.run_on_combo.setCurrentIndex(1)
    assert "needs a Hugging Face id as its base model" in dialog.error_label.text()
    assert not dialog.create_button.isEnabled()
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("qlora"))
    assert "QLoRA needs a GPU, and cpu-only gives a job none" in dialog.run_on_hint.text()


def test_the_gui_only_build_queues_jobs_for_a_cluster_only(
    qtbot, context, runner, store, dataset, hf_cache, tmp_path, monkeypatch
):
    """The GUI-only build has no trainer, but it carries the training code a cluster runs
    (build.spec's cluster-code resource; here the source tree): a cluster job can be queued, a
    local one cannot, and a build without that code says why."""
    import ui.new_job_dialog as dialog_module

    monkeypatch.setattr(dialog_module, "training_available", lambda: False)
    store.add(make_cluster(name="lab", url="h", storage=str(tmp_path), gpus=1))
    dialog = _new_job_dialog(qtbot, context, runner)
    dialog.base_model_combo.setCurrentText(MODEL_ID)
    assert dialog.validate() == {}
    assert not dialog.create_button.isEnabled() and dialog.build_note.isVisible()
    dialog.run_on_combo.setCurrentIndex(1)
    assert dialog.create_button.isEnabled() and not dialog.build_note.isVisible()

    monkeypatch.setattr(dialog_module, "cluster_code_available", lambda: False)
    dialog.run_on_combo.setCurrentIndex(0)
    dialog.run_on_combo.setCurrentIndex(1)
    assert not dialog.create_button.isEnabled()
    assert dialog.build_note.isVisible() and dialog.build_note.text().endswith(CLUSTER_BUILD_NOTE)
    dialog.run_on_combo.setCurrentIndex(0)
    assert CLUSTER_BUILD_NOTE not in dialog.build_note.text()


def test_a_duplicate_runs_where_the_original_ran(qtbot, context, runner, store, dataset, tmp_path):
    store.add(make_cluster(name="lab", url="h", storage=str(tmp_path)))
    draft = JobDraft(dataset.id, MODEL_ID, "again", {"method": "lora"}, target="lab")
    dialog = NewJobDialog(context, runner, [], draft)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.loaded, timeout=WAIT_MS)
    assert dialog.target == "lab"
    gone = JobDraft(dataset.id, MODEL_ID, "again", {"method": "qlora"}, target="old-lab")
    dialog = NewJobDialog(context, runner, [], gone)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.loaded, timeout=WAIT_MS)
    assert dialog.target is None
    assert "cluster old-lab is gone" in dialog.run_on_hint.text()
