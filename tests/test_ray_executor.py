"""The Ray executor against the stand-in head: submit, follow, cancel, results, reconcile; and
the cluster registry with its tokens in a keyring, and `mtm clusters`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keyring
import pytest

from app.errors import BadInputError, NotFoundError
from app.events import ErrorEvent, FinishedEvent, ProgressEvent, StartedEvent, dump_event
from app.executors.clusters import ClusterStore, make_cluster
from app.executors.ray import STOP_WAIT_S, RayExecutor
from app.executors.ray_client import RayJobsClient
from app.executors.reconcile import adopt, reconcile_jobs
from app.executors.storage import FolderStorage
from app.jobs.service import NewJob, claim_next, create_job, get_job
from app.jobs.spec import DatasetSource, TrainingSpec
from tests.ray_head import (
    FakeHead,
    job_details,
    log_socket_server,
    mark_orphaned,
    other_process,
    set_owner,
)

STARTED = StartedEvent(total_steps=2, device="cuda:0", time=1.0)
STEPS = [
    ProgressEvent(
        step=step,
        total_steps=2,
        epoch=step / 2,
        loss=1.0,
        learning_rate=1e-4,
        tokens_per_second=10.0,
        eta_seconds=1.0,
        time=1.0 + step,
    )
    for step in (1, 2)
]
FINISHED = FinishedEvent(status="completed", artifacts={"adapter": "adapter/"}, time=4.0)
LOG = "".join(
    ["Ray: runtime env set up\n", *(dump_event(e).decode() for e in [STARTED, *STEPS, FINISHED])]
)
RUN = "0a1b2c3d"  # the executor's token for each run, in these tests


@pytest.fixture
def spec(tmp_path: Path) -> TrainingSpec:
    records = tmp_path / "records.jsonl"
    records.write_text('{"text": "hi"}\n')
    return TrainingSpec(base_model="org/model", dataset=DatasetSource(records=records))


def executor_for(head: FakeHead, url: str, shared: Path, **cluster: object) -> RayExecutor:
    fields = {"name": "lab", "url": url, "storage": str(shared), "gpus": 1, "cpus": 4, **cluster}
    client = RayJobsClient(url, transport=head.transport)
    return RayExecutor(
        make_cluster(**fields),
        client,
        FolderStorage(shared),
        sleep=lambda _s: None,
        run_token=lambda: RUN,
    )


def finish(head: FakeHead, job_id: str, status: str = "SUCCEEDED", **changes: object) -> None:
    head.jobs[job_id].update(status=status, end_time=1764583300000, **changes)


# -- submit ----------------------------------------------------------------------------------


def test_submit_stages_uploads_and_submits_with_the_job_id(spec, tmp_path):
    head = FakeHead()
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    executor.submit("job1", spec, fresh=True)
    assert (tmp_path / "shared/jobs/job1/dataset/records.jsonl").exists()
    sent = json.loads(next(r for r in head.requests if r.method == "POST").content)
    assert sent["submission_id"] == "job1"
    assert sent["entrypoint"] == (
        f"MTM_RUN={RUN} python -m app.training --job-dir {tmp_path / 'shared/jobs/job1'}"
    )
    assert sent["metadata"]["run"] == RUN
    assert sent["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    assert sent["runtime_env"]["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"] == str(STOP_WAIT_S)
    assert (sent["entrypoint_num_cpus"], sent["entrypoint_num_gpus"]) == (4, 1)
    assert sent["metadata"]["app_job_id"] == "job1"
    assert len(head.packages) == 1


def test_a_resume_frees_the_id_and_skips_the_upload(spec, tmp_path):
    head = FakeHead()
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    executor.submit("job1", spec, fresh=True)
    finish(head, "job1", "STOPPED")
    head.requests.clear()
    executor.submit("job1", spec, fresh=False)
    assert head.paths()[:2] == ["GET /api/jobs/job1", "DELETE /api/jobs/job1"]
    assert not any(path.startswith("PUT") for path in head.paths())  # same bundle: cached
    assert head.jobs["job1"]["status"] == "PENDING"


def test_a_job_still_running_is_not_submitted_twice(spec, tmp_path):
    head = FakeHead()
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    executor.submit("job1", spec, fresh=True)
    head.requests.clear()
    executor.submit("job1", spec, fresh=True)
    assert head.paths() == ["GET /api/jobs/job1"]


# -- follow ----------------------------------------------------------------------------------


def test_follow_gives_the_trainers_events(spec, tmp_path):
    head = FakeHead()
    frames = [LOG[:70], LOG[70:300], LOG[300:]]
    with log_socket_server(frames) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        finish(head, "job1")
        assert list(executor.follow("job1")) == [STARTED, *STEPS, FINISHED]
        assert list(executor.follow("job1", skip=2)) == [STEPS[1], FINISHED]  # after a restart


def test_follow_reconnects_without_repeating_events(spec, tmp_path):
    head = FakeHead()
    cut = LOG.index(dump_event(STEPS[1]).decode()) + 10  # mid-line, after two events
    with log_socket_server([LOG[:cut]], drop=True, later=[LOG]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        finish(head, "job1")
        assert list(executor.follow("job1")) == [STARTED, *STEPS, FINISHED]


def test_a_socket_closed_early_is_caught_up_from_the_whole_log(spec, tmp_path):
    head = FakeHead()
    with log_socket_server([LOG[:200]]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        finish(head, "job1")
        head.logs["job1"] = LOG
        assert list(executor.follow("job1")) == [STARTED, *STEPS, FINISHED]


def test_a_resumed_job_leaves_the_earlier_runs_lines_out(spec, tmp_path):
    # The head appends every run of an id to one log, each after a line naming its entrypoint.
    head = FakeHead()
    cancelled = FinishedEvent(status="cancelled", time=2.5)
    frames: list[str] = []
    with log_socket_server(frames) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        first_run = head.jobs["job1"]["entrypoint"]
        finish(head, "job1", "STOPPED")
        executor._run_token = lambda: "feedf00d"
        executor.submit("job1", spec, fresh=False)
        second_run = head.jobs["job1"]["entrypoint"]
        assert second_run != first_run and "MTM_RUN=feedf00d" in second_run
        frames.append(
            "".join(
                [
                    f"Running entrypoint for job job1: {first_run}\n",
                    *(dump_event(e).decode() for e in [STARTED, STEPS[0], cancelled]),
                    "Traceback: from the first run\n",
                    f"Running entrypoint for job job1: {second_run}\n",
                    *(dump_event(e).decode() for e in [STARTED, STEPS[1], FINISHED]),
                ]
            )
        )
        finish(head, "job1")
        assert list(executor.follow("job1")) == [STARTED, STEPS[1], FINISHED]
        assert list(executor.follow("job1", skip=1)) == [STEPS[1], FINISHED]


def test_a_failure_without_an_error_event_quotes_the_last_lines(spec, tmp_path):
    head = FakeHead()
    log = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'sqlalchemy'\n"
    with log_socket_server([log]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        finish(
            head, "job1", "FAILED", error_type="JOB_ENTRYPOINT_COMMAND_ERROR", driver_exit_code=1
        )
        head.logs["job1"] = log
        *_, last = executor.follow("job1")
    assert isinstance(last, ErrorEvent)
    assert last.message.startswith("Job job1 failed on the cluster (last output: Traceback")
    assert "No module named 'sqlalchemy'" in last.message and last.message.endswith("retry it.")


def test_a_trainer_killed_by_a_signal_says_so(spec, tmp_path):
    head = FakeHead()
    log = dump_event(STARTED).decode() + "Killed\n"
    with log_socket_server([log]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        message = "Job entrypoint command failed with exit code 137, last available logs: Killed"
        finish(head, "job1", "FAILED", driver_exit_code=137, message=message)
        head.logs["job1"] = log
        *_, last = executor.follow("job1")
    assert isinstance(last, ErrorEvent)
    assert last.message == (
        "Job job1 was killed on the cluster by SIGKILL (often the out-of-memory killer: try a "
        "smaller batch or a node with more memory; last output: Killed); resume or retry it."
    )


@pytest.mark.parametrize(
    ("code", "name"), [(137, "SIGKILL"), (-9, "SIGKILL"), (143, "SIGTERM"), (1, None), (None, None)]
)
def test_exit_codes_that_mean_a_signal(code, name):
    from app.executors.errors import killed_by

    assert killed_by(code) == name


def test_a_runtime_env_failure_is_one_sentence(spec, tmp_path):
    head = FakeHead()
    with log_socket_server([]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        message = "Failed to set up runtime environment: package gcs://_ray_pkg_x.zip not found"
        finish(head, "job1", "FAILED", error_type="RUNTIME_ENV_SETUP_FAILURE", message=message)
        events = list(executor.follow("job1"))
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert "could not set up job job1's runtime environment" in events[0].message


def test_a_job_killed_after_its_grace_period_ends_cancelled(spec, tmp_path):
    head = FakeHead()
    partial = dump_event(STARTED).decode()
    with log_socket_server([partial]) as url:
        executor = executor_for(head, url, tmp_path / "shared")
        executor.submit("job1", spec, fresh=True)
        assert executor.cancel("job1") is True
        head.logs["job1"] = partial
        events = list(executor.follow("job1"))
    assert events[0] == STARTED and len(events) == 2
    assert isinstance(events[1], FinishedEvent) and events[1].status == "cancelled"
    assert executor.cancel("nope") is False  # the head does not know it: nothing to stop


def test_results_come_back_into_the_job_folder(spec, tmp_path):
    head = FakeHead()
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    executor.submit("job1", spec, fresh=True)
    (tmp_path / "shared/jobs/job1/adapter").mkdir()
    (tmp_path / "shared/jobs/job1/summary.json").write_text("{}")
    local = tmp_path / "local"
    local.mkdir()
    assert executor.fetch_results("job1", local) == ["adapter", "summary.json"]


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_interrupts_the_jobs_the_head_forgot(context, tmp_path):
    records = tmp_path / "facts.jsonl"
    records.write_text("".join(json.dumps({"text": f"fact {n}"}) + "\n" for n in range(8)))
    from app.datasets.importer import ImportOptions, import_dataset

    dataset = import_dataset(context.database, context.home, records, ImportOptions(name="f"))
    settings = context.settings.load()
    jobs = [
        create_job(context.database, context.home, settings, NewJob(dataset.id, "org/m", target=t))
        for t in ("lab", "lab", "lab", None, "lab", "other")
    ]
    for _ in jobs:
        claim_next(context.database, "test")
    # Jobs 0-3 and 5 were supervised by a process that is gone; job 4's process (this one)
    # lives, and may not have submitted it yet: the head is not asked about it.
    mark_orphaned(context.database, *(job.id for n, job in enumerate(jobs) if n != 4))
    head = FakeHead()
    head.jobs[jobs[0].id] = job_details(jobs[0].id, "RUNNING")
    head.jobs[jobs[1].id] = job_details(jobs[1].id, "SUCCEEDED")
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    states = reconcile_jobs(context.database, executor)
    assert states == {jobs[0].id: "running", jobs[1].id: "ended", jobs[2].id: "unknown"}
    forgotten = get_job(context.database, jobs[2].id)
    assert forgotten.status == "interrupted" and "no longer knows" in forgotten.error
    assert get_job(context.database, jobs[3].id).status == "running"  # a local job: untouched
    assert get_job(context.database, jobs[4].id).status == "running"
    assert get_job(context.database, jobs[5].id).status == "running"  # another cluster's
    asked = {path.rsplit("/", 1)[-1] for path in head.paths() if path.startswith("GET /api/jobs/")}
    assert asked == {jobs[0].id, jobs[1].id, jobs[2].id}


def test_of_two_processes_adopting_an_orphan_exactly_one_takes_it_over(context, tmp_path):
    records = tmp_path / "facts.jsonl"
    records.write_text("".join(json.dumps({"text": f"fact {n}"}) + "\n" for n in range(8)))
    from app.datasets.importer import ImportOptions, import_dataset
    from app.jobs.service import remote_orphans, take_over

    dataset = import_dataset(context.database, context.home, records, ImportOptions(name="f"))
    new = NewJob(dataset.id, "org/m", target="lab")
    job = create_job(context.database, context.home, context.settings.load(), new)
    claim_next(context.database, "a worker that crashed")
    mark_orphaned(context.database, job.id)
    orphans = remote_orphans(context.database)["lab"]  # by cluster
    assert list(orphans) == [job.id]
    head = FakeHead()
    head.jobs[job.id] = job_details(job.id, "RUNNING")
    executor = executor_for(head, "http://127.0.0.1:8265", tmp_path / "shared")
    with other_process() as second:
        # The second process saw the same orphan, and its conditional UPDATE landed first.
        set_owner(context.database, job.id, orphans[job.id])
        assert take_over(context.database, job.id, "second", orphans[job.id]) is True
        set_owner(context.database, job.id, second)
        assert adopt(context.database, executor, "first", orphans) == []
        taken = get_job(context.database, job.id)
        assert (taken.status, taken.pid, taken.pid_started) == ("running", *second)
        assert remote_orphans(context.database) == {}  # its new owner lives
    # Once the second process is gone too, this one takes it over, and only once.
    orphans = remote_orphans(context.database)["lab"]
    assert adopt(context.database, executor, "first", orphans) == [job.id]
    assert adopt(context.database, executor, "first", orphans) == []
    taken = get_job(context.database, job.id)
    assert (taken.worker, taken.pid) == ("first", os.getpid())
    assert remote_orphans(context.database) == {}


# -- the registry and the CLI ----------------------------------------------------------------


def test_clusters_are_stored_without_their_token(database, memory_keyring, tmp_path):
    store = ClusterStore(database)
    cluster = make_cluster(name="lab", url="10.0.0.5", storage=str(tmp_path), token_env="RAY_T")
    assert store.add(cluster, "s3cret-token") is True
    assert store.get("lab").url == "http://10.0.0.5:8265"
    assert store.token(store.get("lab")) == "s3cret-token"
    from app.db.models import Setting

    with database.session() as session:
        stored = "".join(row.value for row in session.query(Setting))
    assert "s3cret-token" not in stored and "RAY_T" in stored
    store.remove("lab")
    assert store.all() == [] and memory_keyring.passwords == {}
    with pytest.raises(NotFoundError, match="no cluster 'lab'"):
        store.get("lab")


def test_without_a_keyring_the_token_comes_from_its_variable(database, monkeypatch, tmp_path):
    from keyring.backends.fail import Keyring as NoKeyring

    before = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        store = ClusterStore(database)
        cluster = make_cluster(name="lab", url="h", storage=str(tmp_path), token_env="RAY_T")
        assert store.add(cluster, "tok") is False
        monkeypatch.setenv("RAY_T", "from-env")
        assert store.token(cluster) == "from-env"
    finally:
        keyring.set_keyring(before)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"name": "bad name"}, "name is not valid"),
        ({"url": "ftp://x"}, "Ray dashboard URL"),
        ({"storage": "relative"}, "is relative"),
        ({"gpus": -1}, "gpus is not valid"),
    ],
)
def test_a_bad_cluster_is_one_sentence(fields, words, tmp_path):
    good = {"name": "lab", "url": "h", "storage": str(tmp_path)}
    with pytest.raises(BadInputError, match=words):
        make_cluster(**{**good, **fields})


def test_cli_clusters_add_list_check_remove_and_target(
    context, memory_keyring, monkeypatch, capsys, tmp_path
):
    from app.cli import main

    home = ["--home", str(context.home.root)]
    monkeypatch.setenv("LAB_TOKEN", "s3cret-value")
    assert (
        main(
            [
                "clusters",
                "add",
                "lab",
                "--url",
                "h:8265",
                "--storage",
                str(tmp_path),
                "--token-env",
                "LAB_TOKEN",
                "--gpus",
                "1",
                *home,
                "--json",
            ]
        )
        == 0
    )
    added = json.loads(capsys.readouterr().out)
    assert added["token_in_keyring"] is True and "s3cret-value" not in json.dumps(added)
    assert main(["clusters", "list", *home, "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["lab"]
    assert main(["clusters", "check", "nope", *home]) == 3
    assert "no cluster 'nope'" in capsys.readouterr().err
    monkeypatch.delenv("LAB_TOKEN")
    assert (
        main(
            [
                "clusters",
                "add",
                "x",
                "--url",
                "h",
                "--storage",
                str(tmp_path),
                "--token-env",
                "LAB_TOKEN",
                *home,
            ]
        )
        == 3
    )
    assert "$LAB_TOKEN is not set" in capsys.readouterr().err
    assert (
        main(["jobs", "create", "--dataset", "d", "--base-model", "m", "--target", "nope", *home])
        == 3
    )
    assert "no cluster 'nope'" in capsys.readouterr().err
    assert main(["clusters", "remove", "lab", *home]) == 0
    assert memory_keyring.passwords == {}
