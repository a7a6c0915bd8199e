"""Remote jobs through the worker pool, against the stand-in Ray head (tests/ray_head.py) and a
shared-folder storage: run to the end beside a local job, cancel, and reconcile after a restart.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.models import Job, JobMetric
from app.events import FinishedEvent, ProgressEvent, StartedEvent, dump_event
from app.executors.clusters import make_cluster
from app.executors.ray import RayExecutor
from app.executors.ray_client import RayJobsClient
from app.executors.storage import FolderStorage
from app.jobs.service import NewJob, apply_events, claim_next, create_job, get_job
from app.workers.pool import WorkerPool
from app.workers.remote_runner import REMOTE_STATE_FILE
from tests.ray_head import (
    FakeHead,
    job_details,
    log_socket_server,
    mark_orphaned,
    other_process,
    set_owner,
)
from tests.test_worker_faults import EMIT, dataset, stand_in  # noqa: F401  (fixture)

WAIT_MS = 60_000
STARTED = StartedEvent(total_steps=2, device="cuda:0", time=1.0)
STEPS = [
    ProgressEvent(
        step=step,
        total_steps=2,
        epoch=step / 2,
        loss=1.0 / step,
        learning_rate=1e-4,
        tokens_per_second=10.0,
        eta_seconds=1.0,
        time=1.0 + step,
    )
    for step in (1, 2)
]
FINISHED = FinishedEvent(status="completed", artifacts={"adapter": "adapter/"}, time=4.0)
EVENTS = [STARTED, *STEPS, FINISHED]
LOG = "Ray: runtime env set up\n" + "".join(dump_event(e).decode() for e in EVENTS)


class Head(FakeHead):
    """The stand-in head, plus what the trainer would do: a job submitted `finishes` at once
    (its results written into storage), or runs until stopped (`hold` is then set)."""

    def __init__(self, shared: Path, *, finishes: bool, hold: threading.Event) -> None:
        super().__init__()
        self.shared, self.finishes, self.hold = shared, finishes, hold

    def _submit(self, body: dict[str, Any]) -> httpx.Response:
        answer = super()._submit(body)
        job_id = body["submission_id"]
        if self.finishes:
            self.logs[job_id] = LOG
            self.jobs[job_id].update(status="SUCCEEDED", end_time=1764583300000)
            results = self.shared / "jobs" / job_id
            (results / "adapter").mkdir(parents=True)
            (results / "adapter/adapter_model.safetensors").write_bytes(b"weights")
            (results / "summary.json").write_text("{}")
        else:
            self.logs[job_id] = dump_event(STARTED).decode()
            self.jobs[job_id].update(status="RUNNING")
        return answer

    def _job(self, method: str, job_id: str, rest: list[str]) -> httpx.Response:
        answer = super()._job(method, job_id, rest)
        if rest == ["stop"]:
            self.hold.set()  # the run has stopped: its log socket closes
        return answer


def pool_for(context, head: FakeHead, url: str, shared: Path, **options: Any) -> WorkerPool:
    def executor(name: str) -> RayExecutor:
        cluster = make_cluster(name=name, url=url, storage=str(shared), gpus=1, cpus=4)
        client = RayJobsClient(url, transport=head.transport)
        return RayExecutor(cluster, client, FolderStorage(shared), sleep=lambda _s: None)

    return WorkerPool(context.database, context.home, 1, executors=executor, **options)


def remote_job(context, dataset) -> Job:  # noqa: F811
    new = NewJob(dataset.id, "org/model", target="lab")
    return create_job(context.database, context.home, context.settings.load(), new)


def collect(pool: WorkerPool) -> tuple[dict[str, str], list[tuple[str, object]]]:
    finished: dict[str, str] = {}
    events: list[tuple[str, object]] = []
    pool.job_finished.connect(finished.__setitem__)
    pool.job_event.connect(lambda job_id, event: events.append((job_id, event)))
    return finished, events


def metric_steps(context, job_id: str) -> list[int]:
    query = select(JobMetric.step).where(JobMetric.job_id == job_id).order_by(JobMetric.step)
    with context.database.session() as session:
        return list(session.scalars(query))


def test_a_remote_job_runs_beside_a_local_one_without_taking_its_slot(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    marker = tmp_path / "remote-done"
    # The local trainer ends only once the remote job has: both run at once with one slot.
    local_trainer = stand_in(
        tmp_path,
        EMIT
        + f"""
from pathlib import Path
for _ in range(600):
    if Path({str(marker)!r}).exists():
        emit(event="finished", status="completed")
        sys.exit(0)
    time.sleep(0.05)
sys.exit(3)
""",
    )
    shared = tmp_path / "shared"
    head = Head(shared, finishes=True, hold=threading.Event())
    local = create_job(
        context.database, context.home, context.settings.load(), NewJob(dataset.id, "some/model")
    )
    remote = remote_job(context, dataset)
    with log_socket_server([LOG[:90], LOG[90:]]) as url:
        pool = pool_for(context, head, url, shared, command=local_trainer)
        finished, events = collect(pool)
        slots: list[list[str | None]] = []
        pool.job_started.connect(lambda _job: slots.append([w.job_id for w in pool.workers()]))
        pool.job_finished.connect(lambda job, _status: job == remote.id and marker.touch())
        pool.start()
        qtbot.waitUntil(lambda: {local.id, remote.id} <= set(finished), timeout=WAIT_MS)
        assert pool.shutdown()
    assert finished == {local.id: "completed", remote.id: "completed"}
    assert [w for w in slots[-1]] == [local.id]  # the remote job is in no slot
    assert [event for job_id, event in events if job_id == remote.id] == EVENTS
    done = get_job(context.database, remote.id)
    assert (done.step, done.loss, done.artifacts["adapter"]) == (2, 0.5, "adapter/")
    assert metric_steps(context, remote.id) == [1, 2]
    folder = context.home.jobs / remote.id
    assert (folder / "adapter/adapter_model.safetensors").read_bytes() == b"weights"
    assert (folder / "summary.json").exists()
    submitted = [r for r in head.requests if r.method == "POST" and r.url.path == "/api/jobs/"]
    assert [json.loads(r.content)["submission_id"] for r in submitted] == [remote.id]


def test_cancelling_a_remote_job_stops_it_on_the_cluster(qtbot, context, dataset, tmp_path):  # noqa: F811
    shared = tmp_path / "shared"
    hold = threading.Event()
    head = Head(shared, finishes=False, hold=hold)
    job = remote_job(context, dataset)
    with log_socket_server([dump_event(STARTED).decode()], hold=hold) as url:
        pool = pool_for(context, head, url, shared)
        finished, _events = collect(pool)
        pool.job_event.connect(lambda job_id, _event: pool.cancel(job_id))
        pool.start()
        qtbot.waitUntil(lambda: job.id in finished, timeout=WAIT_MS)
        assert pool.shutdown()
    assert finished[job.id] == "cancelled"
    assert get_job(context.database, job.id).status == "cancelled"
    assert f"POST /api/jobs/{job.id}/stop" in head.paths()


def test_quitting_leaves_a_remote_job_running_there(qtbot, context, dataset, tmp_path):  # noqa: F811
    shared = tmp_path / "shared"
    hold = threading.Event()
    head = Head(shared, finishes=False, hold=hold)
    job = remote_job(context, dataset)
    with log_socket_server([dump_event(STARTED).decode()], hold=hold) as url:
        pool = pool_for(context, head, url, shared)
        finished, events = collect(pool)
        pool.start()
        qtbot.waitUntil(lambda: bool(events), timeout=WAIT_MS)
        assert pool.shutdown(timeout_ms=10_000)
        hold.set()
    assert finished == {}  # it has not ended: it runs on, and the next start follows it
    assert get_job(context.database, job.id).status == "running"
    assert not any(path.endswith("/stop") for path in head.paths())


def orphaned_remote_job(context, dataset, recorded: int) -> Job:  # noqa: F811
    """A remote job marked running by a process that is gone, with `recorded` events in."""
    job = remote_job(context, dataset)
    assert claim_next(context.database, "a worker that crashed").id == job.id
    mark_orphaned(context.database, job.id)
    apply_events(context.database, job.id, EVENTS[:recorded])
    state = {"attempt": 1, "events": recorded}
    (context.home.jobs / job.id / REMOTE_STATE_FILE).write_text(json.dumps(state))
    return job


def test_after_a_restart_a_running_remote_job_is_followed_without_duplicates(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    shared = tmp_path / "shared"
    hold = threading.Event()
    head = Head(shared, finishes=True, hold=hold)
    job = orphaned_remote_job(context, dataset, recorded=2)
    head.jobs[job.id] = job_details(job.id, "RUNNING")
    head.logs[job.id] = LOG
    with log_socket_server([LOG], hold=hold) as url:
        pool = pool_for(context, head, url, shared)
        finished, events = collect(pool)

        owners: list[tuple[int | None, str | None]] = []

        def run_ends(_job_id: str, _event: object) -> None:
            followed = get_job(context.database, job.id)
            owners.append((followed.pid, followed.worker))
            head.jobs[job.id].update(status="SUCCEEDED")
            hold.set()

        pool.job_event.connect(run_ends)
        pool.start()
        qtbot.waitUntil(lambda: job.id in finished, timeout=WAIT_MS)
        assert pool.shutdown()
    assert finished == {job.id: "completed"}
    assert owners[0] == (os.getpid(), pool._name)  # taken over: no other process adopts it too
    assert [event for _job, event in events] == EVENTS[2:]  # only what was not recorded
    assert metric_steps(context, job.id) == [1, 2]
    assert not any(r.method == "POST" and r.url.path == "/api/jobs/" for r in head.requests)


def test_after_a_restart_a_job_the_head_forgot_is_interrupted(qtbot, context, dataset, tmp_path):  # noqa: F811
    shared = tmp_path / "shared"
    head = Head(shared, finishes=True, hold=threading.Event())
    job = orphaned_remote_job(context, dataset, recorded=1)
    pool = pool_for(context, head, "http://127.0.0.1:8265", shared)
    finished, _events = collect(pool)
    pool.start()
    qtbot.waitUntil(
        lambda: get_job(context.database, job.id).status == "interrupted", timeout=WAIT_MS
    )
    assert pool.shutdown()
    assert finished == {}  # never started here
    assert "no longer knows" in get_job(context.database, job.id).error


def test_a_remote_job_another_living_process_follows_is_left_to_it(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    shared = tmp_path / "shared"
    head = Head(shared, finishes=True, hold=threading.Event())  # it does not know the job yet
    job = remote_job(context, dataset)
    assert claim_next(context.database, "a second window").id == job.id
    with other_process() as second:
        set_owner(context.database, job.id, second)  # it claimed the job and is submitting it
        pool = pool_for(context, head, "http://127.0.0.1:8265", shared)
        finished, _events = collect(pool)
        with qtbot.waitSignal(pool.idle, timeout=WAIT_MS):
            pool.start()
        assert pool.shutdown()
        left = get_job(context.database, job.id)
        assert (left.status, left.pid, left.pid_started) == ("running", *second)
    assert finished == {}
    assert head.requests == []  # neither asked about nor followed here


def test_an_orphan_left_while_the_pool_runs_is_taken_over_in_the_next_round(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    shared = tmp_path / "shared"
    hold = threading.Event()
    head = Head(shared, finishes=True, hold=hold)
    with log_socket_server([LOG], hold=hold) as url:
        pool = pool_for(context, head, url, shared)
        finished, events = collect(pool)
        with qtbot.waitSignal(pool.idle, timeout=WAIT_MS):
            pool.start()
        # Another window followed this job and crashed after recording its first event.
        job = orphaned_remote_job(context, dataset, recorded=1)
        head.jobs[job.id] = job_details(job.id, "SUCCEEDED")
        head.logs[job.id] = LOG
        hold.set()
        pool.dispatch()  # the next round: a job queued or ended anywhere
        qtbot.waitUntil(lambda: job.id in finished, timeout=WAIT_MS)
        assert pool.shutdown()
    assert finished == {job.id: "completed"}
    assert [event for _job, event in events] == EVENTS[1:]
    assert metric_steps(context, job.id) == [1, 2]


def test_a_cluster_that_breaks_the_orphan_search_does_not_hold_up_local_jobs(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    orphaned_remote_job(context, dataset, recorded=1)
    trainer = stand_in(tmp_path, EMIT + 'emit(event="finished", status="completed")\n')

    def broken(_name: str) -> RayExecutor:
        raise RuntimeError("a bug in an executor")

    pool = WorkerPool(context.database, context.home, 1, command=trainer, executors=broken)
    with qtbot.waitSignal(pool.idle, timeout=WAIT_MS):
        pool.start()  # the search at start fails too, and is logged
    local = create_job(
        context.database, context.home, context.settings.load(), NewJob(dataset.id, "some/model")
    )
    finished, _events = collect(pool)
    pool.dispatch()
    qtbot.waitUntil(lambda: local.id in finished, timeout=WAIT_MS)
    assert pool.shutdown()
    assert finished == {local.id: "completed"}


def test_a_remote_job_cancelled_from_another_process_ends_cancelled(
    qtbot,
    context,
    dataset,  # noqa: F811
    tmp_path,
):
    """`mtm jobs cancel` (or a second window) while this pool follows the job: the head is asked
    to stop it, and the follower here records the end."""
    from app.executors.remote_jobs import cancel_where_it_runs

    shared = tmp_path / "shared"
    hold = threading.Event()
    head = Head(shared, finishes=False, hold=hold)
    job = remote_job(context, dataset)
    with log_socket_server([dump_event(STARTED).decode()], hold=hold) as url:
        pool = pool_for(context, head, url, shared)
        finished, _events = collect(pool)
        answers: list[str] = []

        def cancel() -> None:
            answers.append(cancel_where_it_runs(context.database, job.id, pool._executors).status)

        def cancel_elsewhere(_job_id: str, event: object) -> None:
            # On a thread of its own, as another process would; through the same executors.
            if isinstance(event, StartedEvent):
                threading.Thread(target=cancel).start()

        pool.job_event.connect(cancel_elsewhere)
        pool.start()
        qtbot.waitUntil(lambda: job.id in finished, timeout=WAIT_MS)
        assert pool.shutdown()
    assert answers == ["running"]  # asked to stop; the follower records how it ended
    assert finished[job.id] == "cancelled"
    assert get_job(context.database, job.id).status == "cancelled"
    assert head.paths().count(f"POST /api/jobs/{job.id}/stop") == 1


def test_mtm_jobs_cancel_asks_the_cluster_to_stop_a_running_remote_job(
    context,
    dataset,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    from app.cli import main

    shared = tmp_path / "shared"
    head = Head(shared, finishes=False, hold=threading.Event())
    job = remote_job(context, dataset)
    claim_next(context.database, "the window")
    head.jobs[job.id] = job_details(job.id, "RUNNING")
    pool = pool_for(context, head, "http://127.0.0.1:8265", shared)
    monkeypatch.setattr(
        "app.executors.remote_jobs.cluster_executors", lambda _database: pool._executors
    )
    assert main(["jobs", "cancel", job.id, "--home", str(context.home.root)]) == 0
    assert "Asked the cluster lab to stop it" in capsys.readouterr().out
    assert head.jobs[job.id]["status"] == "STOPPED"
    assert get_job(context.database, job.id).status == "running"  # until its follower says


@pytest.fixture(autouse=True)
def _no_keyring_lookups(monkeypatch):  # type: ignore[no-untyped-def]
    """The pool's executors are injected here; a default one would ask the OS keyring."""
    monkeypatch.setattr("app.executors.clusters._stored_token", lambda _name: None)
