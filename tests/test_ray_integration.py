"""The Ray executor against a real Ray head on 127.0.0.1 (tests/ray_cluster.py): the tiny model
trained on the cluster gives the same events and adapter as here; a cancelled run checkpoints
and resumes; failures say why; a restarted app reconciles its running jobs; and a bucket
(moto's S3 server) works as the shared storage.

The shared folder is a folder of this machine, at the same path for the app and the head.

The head takes two jobs at a time (two CPUs, one a job), and the machine has two cores: the jobs
whose outcome does not depend on timing (the bucket run, the missing model) are submitted as the
single-job tests begin (the `background` fixture) and checked at the end, so that both cores work.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.events import (
    CheckpointEvent,
    ErrorEvent,
    Event,
    FinishedEvent,
    ProgressEvent,
    StartedEvent,
    parse_event,
)
from app.executors.clusters import make_cluster
from app.executors.events import decode_log
from app.executors.ray import RayExecutor
from app.executors.ray_client import RayJobsClient
from app.executors.storage import BucketStorage, FolderStorage, Storage
from app.jobs.spec import SPEC_FILE, TrainingSpec, load_spec
from tests import training_fixtures
from tests.ray_cluster import MODEL_ID, S3_ENVIRONMENT, RayHead, ray_head
from tests.ray_head import mark_orphaned
from tests.training_fixtures import (
    REPO_ROOT,
    facts_records,
    make_job,
    trainer_command,
    write_records,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

tiny_model = training_fixtures.tiny_model
__all__ = ["ray_head"]  # the session fixture, used by name

CLUSTER = "local-ray"
RUN_TIMEOUT_S = 180.0
# Enough steps (about 30 ms each) that the run outlasts the log's 1.5-2 s delay to the app.
LONG_RUN = {"epochs": 1000, "max_steps": 200, "save_steps": 20}


# -- helpers ---------------------------------------------------------------------------------


def executor_for(head: RayHead, storage: Storage) -> RayExecutor:
    """A fresh executor on the head, as the app makes one (a new client each time)."""
    cluster = make_cluster(name=CLUSTER, url=head.url, storage=storage.url, cpus=1)
    return RayExecutor(cluster, RayJobsClient(head.url), storage)


def tiny_job(folder: Path, records: Path, **hyperparameters: Any) -> TrainingSpec:
    """The spec of a tiny LoRA run of the cluster's tiny model, written to `folder` (which the
    same run here uses), with its paths resolved as the trainer reads them."""
    settings = {"threads": 1, **hyperparameters}  # as the cluster's one CPU gives the job
    make_job(folder, MODEL_ID, records, **settings)
    return load_spec(folder / SPEC_FILE)


def collect(executor: RayExecutor, job_id: str, *, skip: int = 0, until: Any = None) -> list[Event]:
    """The job's events until the last (or until `until(event)` is true), within a limit."""
    events: list[Event] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    stream = executor.follow(job_id, skip=skip)
    try:
        for event in stream:
            events.append(event)
            if until is not None and until(event):
                break
            assert time.monotonic() < deadline, f"job {job_id} ran over {RUN_TIMEOUT_S:g} s"
    finally:
        stream.close()  # type: ignore[attr-defined]
    return events


def run_here(job_dir: Path, head: RayHead) -> subprocess.Popen[bytes]:
    """The same job on this machine, through the trainer subprocess the local workers start,
    reading the model from the same Hugging Face cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HOME": str(head.hf_home)}
    return subprocess.Popen(
        trainer_command(job_dir),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def read_events(process: subprocess.Popen[bytes]) -> list[Event]:
    out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 0, out.decode(errors="replace")[-2000:]
    return [parse_event(line) for line in out.splitlines() if line.strip()]


def shape(events: list[Event]) -> list[tuple[str, int | None]]:
    """The run's structure: each event's kind and step, without the log lines and the
    progress events (those are time-throttled, so which steps report can differ)."""
    return [
        (e.event, getattr(e, "step", None)) for e in events if e.event not in ("log", "progress")
    ]


def loss_windows(events: list[Event]) -> dict[tuple[int, int], float]:
    """(previous progress step, step) → loss: a progress event's loss is the mean since the
    previous one, so two runs' losses compare where their windows are the same."""
    windows: dict[tuple[int, int], float] = {}
    previous = 0
    for event in events:
        if isinstance(event, ProgressEvent):
            windows[(previous, event.step)] = event.loss
            previous = event.step
    return windows


def close(a: float | None, b: float | None, tolerance: float = 1e-3) -> bool:
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def only(events: list[Event], kind: type[Any]) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, f"expected one {kind.__name__}: {found}"
    return found[0]


def assert_same_adapter(here: Path, there: Path) -> None:
    from safetensors.torch import load_file

    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in there.iterdir())
    configs = [json.loads((d / "adapter_config.json").read_text()) for d in (here, there)]
    for config in configs:  # a set, saved in whatever order the process's hashing gave
        config["target_modules"] = sorted(config["target_modules"])
    assert configs[0] == configs[1]
    ours, theirs = (load_file(str(d / "adapter_model.safetensors")) for d in (here, there))
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        difference = (tensor - theirs[name]).abs().max().item()
        assert difference < 1e-3, f"{name} differs by {difference}"


@pytest.fixture
def shared(tmp_path: Path) -> FolderStorage:
    """The cluster's shared folder: a folder here, at the same path for the head's jobs."""
    return FolderStorage(tmp_path / "shared")


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return write_records(tmp_path / "data", facts_records(1))  # 8 records


# -- a run, here and on the cluster ----------------------------------------------------------


def test_a_job_on_the_cluster_gives_the_same_events_and_adapter_as_here(
    ray_head: RayHead, shared: FolderStorage, records: Path, tmp_path: Path
) -> None:
    spec = tiny_job(tmp_path / "here", records, epochs=2)
    local = run_here(tmp_path / "here", ray_head)  # both at once: one CPU each
    executor = executor_for(ray_head, shared)
    try:
        assert executor.check().startswith("Ray 2.")
        executor.submit("same-run", spec, fresh=True)
        remote = collect(executor, "same-run")
        job_folder = tmp_path / "job-folder"
        job_folder.mkdir()
        fetched = executor.fetch_results("same-run", job_folder)
    finally:
        executor.close()
    here = read_events(local)

    assert shape(remote) == shape(here)
    started, started_here = only(remote, StartedEvent), only(here, StartedEvent)
    assert (started.total_steps, started.train_examples, started.method) == (4, 8, "lora")
    assert started_here.total_steps == 4
    windows, windows_here = loss_windows(remote), loss_windows(here)
    assert (0, 1) in windows and max(step for _, step in windows) == 4
    common = windows.keys() & windows_here.keys()
    assert (0, 1) in common
    for window in common:
        assert close(windows[window], windows_here[window]), (window, windows, windows_here)
    finished, finished_here = only(remote, FinishedEvent), only(here, FinishedEvent)
    assert finished.status == finished_here.status == "completed"
    assert finished.artifacts == finished_here.artifacts == {"adapter": "adapter/"}
    summary, summary_here = finished.summary, finished_here.summary
    assert summary is not None and summary_here is not None
    assert (summary.steps, summary.tokens) == (summary_here.steps, summary_here.tokens)
    assert close(summary.train_loss, summary_here.train_loss)

    assert "adapter" in fetched and "events.jsonl" in fetched
    assert_same_adapter(tmp_path / "here" / "adapter", job_folder / "adapter")
    # The folder's own record of the run is the same events the log carried.
    recorded = [
        parse_event(line)
        for line in (job_folder / "events.jsonl").read_bytes().split(b"\n")
        if line
    ]
    assert [e for e in recorded if e.event != "log"] == [e for e in remote if e.event != "log"]


# -- `mtm clusters` against the head ------------------------------------------------------


def test_mtm_clusters_check_asks_the_head(
    ray_head: RayHead, context: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keyring
    from keyring.backends.fail import Keyring as NoKeyring

    from app.cli import main

    home = ["--home", str(context.home.root)]
    before = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())  # never this machine's own keyring
    try:
        add = ["clusters", "add", CLUSTER, "--url", ray_head.url, "--storage", str(tmp_path)]
        assert main([*add, *home]) == 0
        capsys.readouterr()
        assert main(["clusters", "check", CLUSTER, *home, "--json"]) == 0
    finally:
        keyring.set_keyring(before)
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is True and answer["server"].startswith("Ray 2.")
    assert "(Jobs API 4)" in answer["server"]


# -- cancel and resume -----------------------------------------------------------------------


def test_a_cancelled_job_leaves_a_checkpoint_and_resumes_to_the_end(
    ray_head: RayHead, shared: FolderStorage, records: Path, tmp_path: Path, background: Background
) -> None:
    del background  # submitted now, to run beside this test's job
    spec = tiny_job(tmp_path / "spec", records, **LONG_RUN)
    executor = executor_for(ray_head, shared)
    try:
        executor.submit("cancel-resume", spec, fresh=True)
        first = collect(executor, "cancel-resume", until=lambda e: isinstance(e, CheckpointEvent))
        assert executor.cancel("cancel-resume") is True
        # The stream again from where it was, as the app follows it after asking for the stop.
        rest = collect(executor, "cancel-resume", skip=len(first))
        stopped = first + rest
        last = stopped[-1]
        assert isinstance(last, FinishedEvent) and last.status == "cancelled", last
        checkpoints = [e.step for e in stopped if isinstance(e, CheckpointEvent)]
        assert checkpoints and checkpoints[-1] < 200
        job_dir = shared.job_dir("cancel-resume")
        assert (job_dir / f"checkpoints/step-{checkpoints[-1]}").is_dir()
        assert executor.client.job("cancel-resume").status in ("STOPPED", "SUCCEEDED")

        executor.submit("cancel-resume", spec, fresh=False)  # the resume
        resumed = collect(executor, "cancel-resume")
    finally:
        executor.close()
    started = only(resumed, StartedEvent)
    assert started.resume_step == checkpoints[-1] and started.total_steps == 200
    steps = [e.step for e in resumed if isinstance(e, ProgressEvent)]
    assert steps[0] > checkpoints[-1] and steps[-1] == 200
    finished = resumed[-1]
    assert isinstance(finished, FinishedEvent) and finished.status == "completed", finished
    assert finished.summary is not None and finished.summary.steps == 200
    assert (shared.job_dir("cancel-resume") / "adapter/adapter_model.safetensors").is_file()


# -- failures --------------------------------------------------------------------------------


def test_a_trainer_killed_on_the_cluster_is_reported_with_its_last_lines(
    ray_head: RayHead, shared: FolderStorage, records: Path, tmp_path: Path
) -> None:
    spec = tiny_job(tmp_path / "spec", records, **LONG_RUN)
    executor = executor_for(ray_head, shared)
    try:
        executor.submit("killed", spec, fresh=True)
        events = collect(executor, "killed", until=lambda e: isinstance(e, ProgressEvent))
        _kill_trainer(shared.job_dir("killed"))  # as the out-of-memory killer would
        events += collect(executor, "killed", skip=len(events))
        details = executor.client.job("killed")
    finally:
        executor.close()
    assert details.status == "FAILED"
    last = events[-1]
    assert isinstance(last, ErrorEvent), last
    assert last.message.startswith("Job killed was killed on the cluster by SIGKILL (often ")
    assert last.message.endswith("retry it.") and "\n" not in last.message


def _kill_trainer(job_dir: Path) -> None:
    import psutil

    wanted = str(job_dir)
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "app.training" in command and wanted in command:
            os.kill(process.pid, signal.SIGKILL)
            return
    raise AssertionError(f"no trainer runs for {wanted}")


# -- the app restarts while a job runs -------------------------------------------------------


def test_a_restarted_app_reconciles_its_running_jobs(
    ray_head: RayHead, context: Any, shared: FolderStorage, records: Path
) -> None:
    from sqlalchemy import select

    from app.datasets.importer import ImportOptions, import_dataset
    from app.db.models import JobMetric
    from app.executors.reconcile import reconcile_jobs
    from app.jobs.service import (
        NewJob,
        apply_events,
        claim_next,
        create_job,
        finish_job,
        get_job,
    )

    dataset = import_dataset(context.database, context.home, records, ImportOptions(name="facts"))
    settings = context.settings.load()
    hyperparameters = {"max_seq_length": 64, "batch_size": 4, "lora_r": 8, **LONG_RUN}
    running, forgotten = (
        create_job(
            context.database,
            context.home,
            settings,
            NewJob(dataset.id, MODEL_ID, hyperparameters=hyperparameters, target=CLUSTER),
        )
        for _ in range(2)
    )
    assert claim_next(context.database, "test").id == running.id
    assert claim_next(context.database, "test").id == forgotten.id  # the head never has it
    mark_orphaned(context.database, running.id, forgotten.id)  # their app went away
    spec = TrainingSpec.model_validate(get_job(context.database, running.id).spec)

    before = executor_for(ray_head, shared)
    try:
        before.submit(running.id, spec, fresh=True)
        recorded = collect(before, running.id, until=lambda e: isinstance(e, ProgressEvent))
        apply_events(context.database, running.id, recorded)
    finally:
        before.close()  # the app goes away in the middle of the run

    after = executor_for(ray_head, shared)  # the app, started again
    try:
        states = reconcile_jobs(context.database, after)
        assert states == {running.id: "running", forgotten.id: "unknown"}
        rest = collect(after, running.id, skip=len(recorded))
        apply_events(context.database, running.id, rest)
        last = rest[-1]
        assert isinstance(last, FinishedEvent), last
        finish_job(context.database, running.id, last, None)
        whole, _decoder = decode_log(after.client.logs(running.id))
    finally:
        after.close()

    assert recorded + rest == whole  # every event once, none twice
    assert get_job(context.database, running.id).status == "completed"
    lost = get_job(context.database, forgotten.id)
    assert lost.status == "interrupted" and "no longer knows this job" in (lost.error or "")
    with context.database.session() as session:
        steps = session.scalars(
            select(JobMetric.step).where(
                JobMetric.job_id == running.id, JobMetric.loss.is_not(None)
            )
        ).all()
    assert steps and len(steps) == len(set(steps)) and max(steps) == 200


# -- the jobs submitted early: a bucket for storage, a model the cluster lacks -----------------


@dataclass
class Background:
    folder: RayExecutor  # on a shared folder of its own
    bucket: RayExecutor  # on s3://mtm-ray/runs
    storage: BucketStorage


BUCKET = "mtm-ray"


@pytest.fixture(scope="module")
def background(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """The jobs whose outcome does not depend on when they run, submitted at once (the head
    queues what it has no CPU for) and checked by the last tests."""
    import boto3

    root = tmp_path_factory.mktemp("background")
    records = write_records(root / "data", facts_records(1))
    s3 = boto3.client("s3", endpoint_url=ray_head.s3_endpoint, **_aws_arguments())
    s3.create_bucket(Bucket=BUCKET)
    storage = BucketStorage(f"s3://{BUCKET}/runs", client=s3)
    jobs = Background(
        executor_for(ray_head, FolderStorage(root / "shared")),
        executor_for(ray_head, storage),
        storage,
    )
    try:
        missing = tiny_job(root / "missing", records).model_copy(
            update={"base_model": "mtm-test/not-on-the-cluster"}
        )
        jobs.folder.submit("no-model", missing, fresh=True)
        jobs.bucket.submit(
            "bucket-run", tiny_job(root / "bucket", records, save_steps=1), fresh=True
        )
        yield jobs
    finally:
        jobs.folder.close()
        jobs.bucket.close()
        for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        s3.delete_bucket(Bucket=BUCKET)


def _aws_arguments() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENVIRONMENT["AWS_DEFAULT_REGION"],
    }


def test_a_job_with_a_bucket_for_storage_completes_and_its_adapter_comes_back(
    background: Background, tmp_path: Path
) -> None:
    events = collect(background.bucket, "bucket-run")
    last = events[-1]
    assert isinstance(last, FinishedEvent) and last.status == "completed", last
    assert [e.step for e in events if isinstance(e, CheckpointEvent)] == [1]  # none at the end
    fetched = background.bucket.fetch_results("bucket-run", tmp_path)
    assert {"adapter", "summary.json", "events.jsonl"} <= set(fetched)
    assert (tmp_path / "adapter/adapter_model.safetensors").stat().st_size > 0
    storage = background.storage  # the checkpoint stayed in the bucket, for a resume
    assert storage._keys(storage.key("bucket-run", "checkpoints/step-1"))


def test_a_base_model_the_cluster_does_not_have_is_reported_in_one_sentence(
    background: Background,
) -> None:
    events = collect(background.folder, "no-model")
    last = events[-1]
    assert isinstance(last, ErrorEvent) and last.kind == "model_not_found", last
    assert "mtm-test/not-on-the-cluster cannot be loaded" in last.message
    assert "\n" not in last.message
    assert not any(isinstance(e, FinishedEvent) for e in events)
    assert background.folder.client.job("no-model").status == "FAILED"
