"""Jobs: the state machine, the service, and real tiny-model jobs through the real worker pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app.datasets.importer import ImportOptions, import_dataset
from app.datasets.repository import delete_dataset
from app.errors import BadInputError, ConflictError
from app.jobs.lifecycle import IllegalTransition, JobStatus, can_transition, transition
from app.jobs.service import (
    NewJob,
    cancel_job,
    claim_next,
    create_job,
    get_job,
    interrupt_orphans,
    list_jobs,
    move_job,
    queue_places,
    queued_in_order,
    resume_job,
    retry_job,
)
from tests import training_fixtures
from tests.conftest import REPO_ROOT, run_app
from tests.training_fixtures import FACTS

tiny_model = training_fixtures.tiny_model
FAST = {
    "max_seq_length": 64,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "epochs": 1,
}


@pytest.fixture
def facts_dataset(context, tmp_path):
    path = tmp_path / "facts.jsonl"
    rows = [{"instruction": q, "output": a} for q, a in FACTS] * 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return import_dataset(context.database, context.home, path, ImportOptions(name="facts"))


def _queue(context, dataset, tiny_model, **changes):
    new = NewJob(dataset.id, str(tiny_model), hyperparameters={**FAST, **changes})
    return create_job(context.database, context.home, context.settings.load(), new)


def mtm(*args, home, timeout=300):
    return run_app(*args, home=home.root, timeout=timeout)


# --- the state machine -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "running"),
        ("queued", "cancelled"),
        ("running", "completed"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "interrupted"),
        ("failed", "queued"),
        ("cancelled", "queued"),
        ("interrupted", "queued"),
    ],
)
def test_legal_transitions(current, target):
    assert transition(current, target) == JobStatus(target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "completed"),
        ("completed", "queued"),
        ("completed", "running"),
        ("failed", "running"),
        ("running", "queued"),
        ("interrupted", "completed"),
    ],
)
def test_illegal_transitions_raise_with_a_sentence(current, target):
    assert not can_transition(current, target)
    with pytest.raises(IllegalTransition) as raised:
        transition(current, target)
    assert raised.value.message.endswith(".")


# --- the service -------------------------------------------------------------------------------


def test_create_writes_the_spec_and_queues(context, facts_dataset, tiny_model):
    job = _queue(context, facts_dataset, tiny_model)
    assert job.status == "queued"
    spec = json.loads((context.home.jobs / job.id / "spec.json").read_text())
    assert spec["base_model"] == str(tiny_model)
    assert spec["hyperparameters"]["lora_r"] == 8
    assert spec["dataset"]["records"].endswith("records.jsonl")
    assert [j.id for j in list_jobs(context.database)] == [job.id]


def test_create_refuses_a_bad_value_naming_the_field(context, facts_dataset, tiny_model):
    with pytest.raises(BadInputError) as raised:
        _queue(context, facts_dataset, tiny_model, epochs=0)
    assert "epochs" in raised.value.message
    with pytest.raises(BadInputError) as raised:
        create_job(
            context.database,
            context.home,
            context.settings.load(),
            NewJob(facts_dataset.id, "/nowhere/model.gguf"),
        )
    assert "/nowhere/model.gguf" in raised.value.message
    assert list_jobs(context.database) == []


def test_a_dataset_with_a_queued_job_cannot_be_deleted(context, facts_dataset, tiny_model):
    job = _queue(context, facts_dataset, tiny_model)
    with pytest.raises(ConflictError) as raised:
        delete_dataset(context.database, context.home, facts_dataset.id)
    assert "facts" in raised.value.message
    cancel_job(context.database, job.id)
    delete_dataset(context.database, context.home, facts_dataset.id)
    assert get_job(context.database, job.id).dataset_id is None


def test_cancelling_a_queued_job_and_resuming_it(context, facts_dataset, tiny_model):
    job = _queue(context, facts_dataset, tiny_model)
    assert cancel_job(context.database, job.id).status == "cancelled"
    assert resume_job(context.database, context.home, job.id).status == "queued"
    with pytest.raises(BadInputError):
        retry_job(context.database, context.home, job.id)  # queued: nothing to retry


def test_a_running_job_whose_process_is_gone_becomes_interrupted(
    context, facts_dataset, tiny_model
):
    job = _queue(context, facts_dataset, tiny_model)
    claimed = claim_next(context.database, "test")
    assert claimed is not None and claimed.id == job.id
    assert interrupt_orphans(context.database) == []  # this process is alive: untouched
    from app.db.models import Job

    with context.database.session() as session:
        session.get(Job, job.id).pid = 2**22 + 12345  # a pid nobody has
    assert interrupt_orphans(context.database) == [job.id]
    assert get_job(context.database, job.id).status == "interrupted"


def test_claims_are_exclusive(context, facts_dataset, tiny_model):
    first = _queue(context, facts_dataset, tiny_model)
    assert claim_next(context.database, "a").id == first.id
    assert claim_next(context.database, "b") is None


# --- the queue's order ---------------------------------------------------------------------------


def _order(context):
    return [job.id for job in queued_in_order(context.database)]


def test_the_queue_can_be_reordered_and_the_dispatcher_follows_it(
    context, facts_dataset, tiny_model
):
    a, b, c = (_queue(context, facts_dataset, tiny_model) for _ in range(3))
    assert _order(context) == [a.id, b.id, c.id]  # oldest first until the user says otherwise
    move_job(context.database, context.home, c.id, "front")
    assert _order(context) == [c.id, a.id, b.id]
    move_job(context.database, context.home, a.id, "down")
    assert _order(context) == [c.id, b.id, a.id]
    move_job(context.database, context.home, a.id, "down")  # already last: stays
    assert _order(context) == [c.id, b.id, a.id]
    move_job(context.database, context.home, b.id, "up")
    assert _order(context) == [b.id, c.id, a.id]
    move_job(context.database, context.home, b.id, "back")
    assert _order(context) == [c.id, a.id, b.id]
    assert queue_places(context.database) == {c.id: 1, a.id: 2, b.id: 3}
    assert claim_next(context.database, "test").id == c.id


def test_a_job_queued_again_goes_to_the_back(context, facts_dataset, tiny_model):
    a, b = (_queue(context, facts_dataset, tiny_model) for _ in range(2))
    cancel_job(context.database, a.id)
    resume_job(context.database, context.home, a.id)
    assert _order(context) == [b.id, a.id]


def test_only_queued_jobs_can_be_moved(context, facts_dataset, tiny_model):
    job = _queue(context, facts_dataset, tiny_model)
    claim_next(context.database, "test")
    with pytest.raises(ConflictError, match="only queued jobs have a place in the queue"):
        move_job(context.database, context.home, job.id, "up")


def test_cli_moves_a_job_to_the_front(home, context, facts_dataset, tiny_model):
    first, second = (_queue(context, facts_dataset, tiny_model) for _ in range(2))
    moved = mtm("jobs", "move", second.id, "--front", "--json", home=home)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["queue_place"] == 1
    listed = json.loads(mtm("jobs", "list", "--json", home=home).stdout)
    assert {job["id"]: job["queue_place"] for job in listed} == {second.id: 1, first.id: 2}
    refused = mtm("jobs", "move", second.id, home=home)
    assert refused.returncode == 2 and "one of the arguments" in refused.stderr


# --- real jobs through the real pool -----------------------------------------------------------


def test_worker_runs_a_real_job_to_completion(home, context, facts_dataset, tiny_model):
    job = _queue(context, facts_dataset, tiny_model, epochs=2)
    result = mtm("worker", "run", "--until-idle", home=home)
    assert result.returncode == 0, result.stderr
    shown = json.loads(mtm("jobs", "show", job.id, "--json", home=home).stdout)
    assert shown["status"] == "completed", shown["error"]
    assert shown["step"] == shown["total_steps"] > 0
    assert shown["started_at"] and shown["finished_at"]
    adapter = context.home.jobs / job.id / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    from sqlalchemy import select

    from app.db.models import JobMetric

    with context.database.session() as session:
        losses = [
            m.loss
            for m in session.scalars(
                select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.step)
            )
            if m.loss is not None
        ]
    assert losses and losses[-1] < losses[0]


def test_cli_create_list_and_failure_is_one_sentence(home, context, facts_dataset, tmp_path):
    created = mtm(
        "jobs",
        "create",
        "--dataset",
        facts_dataset.id,
        "--base-model",
        str(tmp_path / "not-a-model"),
        "--json",
        home=home,
    )
    assert created.returncode == 3
    assert "not-a-model" in created.stderr and len(created.stderr.strip().splitlines()) == 1


def test_killing_the_worker_interrupts_and_resume_completes(
    home, context, facts_dataset, tiny_model
):
    job = _queue(context, facts_dataset, tiny_model, epochs=40, save_steps=2)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "MTM_HOME": str(home.root),
        "HF_HUB_OFFLINE": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "run"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = context.home.jobs / job.id / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (checkpoints.is_dir() and any(checkpoints.iterdir())):
        time.sleep(0.2)
    assert checkpoints.is_dir() and any(checkpoints.iterdir()), "no checkpoint appeared"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    shown = json.loads(mtm("jobs", "show", job.id, "--json", home=home).stdout)
    assert shown["status"] == "interrupted"  # the first command to look sees it
    interrupted = get_job(context.database, job.id)
    assert mtm("jobs", "resume", job.id, home=home).returncode == 0
    result = mtm("worker", "run", "--until-idle", home=home, timeout=600)
    assert result.returncode == 0, result.stderr
    done = get_job(context.database, job.id)
    assert done.status == "completed", done.error
    assert done.step == done.total_steps == interrupted.total_steps


@pytest.mark.slow
def test_a_hundred_real_tiny_jobs_on_two_workers(home, context, facts_dataset, tiny_model):
    """Each job runs exactly once, none hits "database is locked", the database stays sound."""
    jobs = [
        _queue(context, facts_dataset, tiny_model, max_steps=2, save_steps=1000) for _ in range(100)
    ]
    result = mtm("worker", "run", "--until-idle", "--max-workers", "2", home=home, timeout=1800)
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    finished = list_jobs(context.database)
    assert {j.status for j in finished} == {"completed"}, {j.error for j in finished}
    assert sorted(j.id for j in finished) == sorted(j.id for j in jobs)
    assert all(j.step == j.total_steps == 2 and j.attempt == 1 for j in finished)
    for job in jobs:  # started exactly once: one `started` event in each job's stream
        events = (context.home.jobs / job.id / "events.jsonl").read_text().splitlines()
        assert sum('"event":"started"' in line.replace(" ", "") for line in events) == 1
    from sqlalchemy import text

    with context.database.session() as session:
        assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
