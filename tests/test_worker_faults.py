"""The worker pool against trainers that misbehave, and under load: each fault is a test.

The stand-in trainers are small real programs (the pool's trainer command is injectable), so
these tests exercise the real subprocess handling, pipes, signals and database writes.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.datasets.importer import ImportOptions, import_dataset
from app.db.models import Job
from app.jobs.service import NewJob, create_job, get_job, list_jobs, retry_job
from app.workers.pool import WorkerPool

WAIT_MS = 120_000


@pytest.fixture
def dataset(context, tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    return import_dataset(context.database, context.home, path, ImportOptions())


def stand_in(tmp_path: Path, body: str) -> object:
    """A trainer command running `body` (Python) with the job folder as its argument."""
    script = tmp_path / f"trainer_{abs(hash(body))}.py"
    script.write_text(textwrap.dedent(body))
    return lambda folder: [sys.executable, str(script), str(folder)]


EMIT = """
import json, sys, time, signal
def emit(**event):
    sys.stdout.write(json.dumps(event) + "\\n"); sys.stdout.flush()
"""


def queue(context, dataset, count=1):
    settings = context.settings.load()
    return [
        create_job(context.database, context.home, settings, NewJob(dataset.id, "some/model"))
        for _ in range(count)
    ]


def run_until_idle(qtbot, pool, jobs):
    ids = {job.id for job in jobs}
    finished: dict[str, str] = {}
    pool.job_finished.connect(finished.__setitem__)
    pool.start()
    qtbot.waitUntil(lambda: ids <= set(finished), timeout=WAIT_MS)
    assert pool.shutdown()
    return finished


def test_a_trainer_that_crashes_fails_the_job_with_its_last_words(
    qtbot, context, dataset, tmp_path
):
    command = stand_in(
        tmp_path,
        EMIT
        + """
emit(event="started", total_steps=10, device="cpu")
sys.stderr.write("Traceback: something broke inside\\n")
sys.exit(1)
""",
    )
    [job] = queue(context, dataset)
    pool = WorkerPool(context.database, context.home, 1, command=command)
    assert run_until_idle(qtbot, pool, [job]) == {job.id: "failed"}
    failed = get_job(context.database, job.id)
    assert "exit code 1" in failed.error and "something broke inside" in failed.error
    assert failed.total_steps == 10
    assert "something broke" in (context.home.jobs / job.id / "stderr.log").read_text()


def test_a_malformed_line_is_skipped_and_the_job_completes(qtbot, context, dataset, tmp_path):
    command = stand_in(
        tmp_path,
        EMIT
        + """
emit(event="started", total_steps=2, device="cpu")
print("this is not an event", flush=True)
emit(event="progress", step=2, total_steps=2, epoch=1.0, loss=0.5, learning_rate=0.001,
     tokens_per_second=10.0, eta_seconds=0.0)
emit(event="finished", status="completed", artifacts={"adapter": "adapter/"})
""",
    )
    [job] = queue(context, dataset)
    pool = WorkerPool(context.database, context.home, 1, command=command)
    assert run_until_idle(qtbot, pool, [job]) == {job.id: "completed"}
    done = get_job(context.database, job.id)
    assert (done.step, done.loss, done.artifacts["adapter"]) == (2, 0.5, "adapter/")


def test_a_trainer_that_ignores_sigterm_is_killed_after_the_grace_period(
    qtbot, context, dataset, tmp_path
):
    command = stand_in(
        tmp_path,
        EMIT
        + """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
emit(event="started", total_steps=100, device="cpu")
while True:
    time.sleep(0.1)
""",
    )
    [job] = queue(context, dataset)
    pool = WorkerPool(context.database, context.home, 1, command=command, grace_s=0.5)
    finished: dict[str, str] = {}
    pool.job_finished.connect(finished.__setitem__)
    pool.job_event.connect(lambda job_id, event: pool.cancel(job_id))
    pool.start()
    qtbot.waitUntil(lambda: job.id in finished, timeout=WAIT_MS)
    assert finished[job.id] == "cancelled"
    assert pool.shutdown()


def test_cancelling_a_queued_job_and_retrying_a_failed_one(qtbot, context, dataset, tmp_path):
    crash = stand_in(tmp_path, EMIT + "sys.exit(2)\n")
    first, second = queue(context, dataset, 2)
    pool = WorkerPool(context.database, context.home, 1, command=crash)
    pool.cancel(second.id)  # still queued: cancelled at once, never started
    assert get_job(context.database, second.id).status == "cancelled"
    assert run_until_idle(qtbot, pool, [first]) == {first.id: "failed"}
    assert retry_job(context.database, context.home, first.id).attempt == 2
    ok = stand_in(tmp_path, EMIT + "emit(event='finished', status='completed')\n")
    again = WorkerPool(context.database, context.home, 1, command=ok)
    assert run_until_idle(qtbot, again, [first]) == {first.id: "completed"}


def test_a_hundred_jobs_on_two_workers_each_run_exactly_once(qtbot, context, dataset, tmp_path):
    marker = tmp_path / "runs.log"
    command = stand_in(
        tmp_path,
        EMIT
        + f"""
with open({str(marker)!r}, "a") as log:
    log.write(sys.argv[1] + "\\n")
emit(event="started", total_steps=3, device="cpu")
for step in (1, 2, 3):
    emit(event="progress", step=step, total_steps=3, epoch=step / 3, loss=1.0 / step,
         learning_rate=0.001, tokens_per_second=100.0, eta_seconds=0.0)
emit(event="finished", status="completed")
""",
    )
    jobs = queue(context, dataset, 100)
    pool = WorkerPool(context.database, context.home, 2, command=command)
    finished = run_until_idle(qtbot, pool, jobs)
    assert set(finished.values()) == {"completed"} and len(finished) == 100
    runs = marker.read_text().split()
    assert sorted(runs) == sorted({str(context.home.jobs / j.id) for j in jobs})  # once each
    with context.database.session() as session:
        assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert session.scalar(select(func.count()).where(Job.status == "completed")) == 100
        assert session.scalar(select(func.count()).where(Job.step != 3)) == 0


def test_changing_max_workers_while_jobs_run(qtbot, context, dataset, tmp_path):
    command = stand_in(
        tmp_path,
        EMIT
        + """
time.sleep(0.5)
emit(event="finished", status="completed")
""",
    )
    jobs = queue(context, dataset, 6)
    pool = WorkerPool(context.database, context.home, 1, command=command)
    peak = [0]
    pool.job_started.connect(lambda _job: peak.__setitem__(0, max(peak[0], len(pool.running_jobs))))
    pool.job_started.connect(lambda _job: pool.set_max_workers(3))
    finished = run_until_idle(qtbot, pool, jobs)
    assert len(finished) == 6 and set(finished.values()) == {"completed"}
    assert peak[0] == 3
    assert all(job.status == "completed" for job in list_jobs(context.database))


def test_pause_resume_and_status_across_processes(qtbot, context, dataset, tmp_path, home):
    from tests.conftest import run_app

    def mtm(*args):
        return run_app(*args, home=home.root)

    command = stand_in(tmp_path, EMIT + "emit(event='finished', status='completed')\n")
    pool = WorkerPool(context.database, context.home, 2, command=command)
    pool.start()
    assert mtm("worker", "pause").returncode == 0
    qtbot.waitUntil(lambda: pool.paused, timeout=10_000)
    [job] = queue(context, dataset)
    qtbot.wait(500)
    assert get_job(context.database, job.id).status == "queued"  # paused: it waits
    status = json.loads(mtm("worker", "status", "--json").stdout)
    assert status["paused"] is True
    assert [p["max_workers"] for p in status["pools"]] == [2]
    assert mtm("worker", "resume").returncode == 0
    qtbot.waitUntil(
        lambda: get_job(context.database, job.id).status == "completed", timeout=WAIT_MS
    )
    assert pool.shutdown()
    assert json.loads(mtm("worker", "status", "--json").stdout)["pools"] == []


def test_metrics_endpoint_counts_queue_and_outcomes(qtbot, context, dataset, tmp_path):
    import socket
    import urllib.request

    from app.workers.metrics import PoolMetrics

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = PoolMetrics(context.database)
    metrics.serve(port)
    queue(context, dataset, 3)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "mtm_queue_depth 3.0" in body
    metrics.on_job_started("abc")
    metrics.on_job_finished("abc", "completed")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'mtm_jobs_finished_total{status="completed"} 1.0' in body
    assert "mtm_workers_busy 0.0" in body
    metrics.close()


# --- GPUs (simulated inventory; the placement logic and CUDA_VISIBLE_DEVICES are real) --------


@pytest.fixture
def shaped_model(tmp_path):
    """A model folder whose config.json gives the estimate a real shape (SmolLM2-135M's)."""
    folder = tmp_path / "smollm2-shape"
    folder.mkdir()
    config = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def gpu_jobs(context, dataset, model, count):
    settings = context.settings.load()
    return [
        create_job(context.database, context.home, settings, NewJob(dataset.id, str(model)))
        for _ in range(count)
    ]


def gpu_recorder(tmp_path, seconds=0.6):
    log = tmp_path / "gpus.log"
    return log, stand_in(
        tmp_path,
        EMIT
        + f"""
import os
start = time.time()
time.sleep({seconds})
with open({str(log)!r}, "a") as out:
    out.write(f"{{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}} {{start}} {{time.time()}}\\n")
emit(event="finished", status="completed")
""",
    )


def test_jobs_spread_over_gpus_that_can_hold_them(qtbot, context, dataset, tmp_path, shaped_model):
    from app.jobs.service import gpu_memory_needed
    from app.workers.gpus import Gpu

    jobs = gpu_jobs(context, dataset, shaped_model, 2)
    need = gpu_memory_needed(jobs[0])
    assert need is not None and need > 0
    gpus = [Gpu(0, "A", int(need * 1.5), 0), Gpu(1, "B", int(need * 1.5), 0)]
    log, command = gpu_recorder(tmp_path)
    pool = WorkerPool(context.database, context.home, 2, command=command, gpus=gpus)
    assert set(run_until_idle(qtbot, pool, jobs).values()) == {"completed"}
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["0", "1"]


def test_a_job_waits_until_its_gpu_has_room(qtbot, context, dataset, tmp_path, shaped_model):
    from app.jobs.service import gpu_memory_needed
    from app.workers.gpus import Gpu

    jobs = gpu_jobs(context, dataset, shaped_model, 2)
    need = gpu_memory_needed(jobs[0])
    log, command = gpu_recorder(tmp_path)
    pool = WorkerPool(
        context.database, context.home, 2, command=command, gpus=[Gpu(0, "A", int(need * 1.5), 0)]
    )
    assert set(run_until_idle(qtbot, pool, jobs).values()) == {"completed"}
    (first, a_start, a_end), (second, b_start, b_end) = sorted(
        (line.split()[0], float(line.split()[1]), float(line.split()[2]))
        for line in log.read_text().splitlines()
    )
    assert first == second == "0"
    assert b_start >= a_end or a_start >= b_end  # never both on the GPU at once


def test_a_job_too_big_for_every_gpu_fails_with_a_sentence(
    qtbot, context, dataset, tmp_path, shaped_model
):
    from app.workers.gpus import Gpu

    [job] = gpu_jobs(context, dataset, shaped_model, 1)
    _log, command = gpu_recorder(tmp_path)
    pool = WorkerPool(
        context.database,
        context.home,
        1,
        command=command,
        gpus=[Gpu(0, "small", 64 * 1024 * 1024, 0)],
    )
    assert run_until_idle(qtbot, pool, [job]) == {job.id: "failed"}
    error = get_job(context.database, job.id).error
    assert "GPU memory" in error and "QLoRA" in error


def test_gpus_are_found_with_nvidia_smi(tmp_path, monkeypatch):
    from app.workers.gpus import discover_gpus

    tool = tmp_path / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\necho '0, NVIDIA H200, 143771, 1024'\necho '1, NVIDIA H200, 143771, 0'\n"
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    gpus = discover_gpus()
    assert [(g.index, g.name, g.total_bytes // 2**20, g.used_bytes // 2**20) for g in gpus] == [
        (0, "NVIDIA H200", 143771, 1024),
        (1, "NVIDIA H200", 143771, 0),
    ]


def test_stopping_a_job_the_moment_it_starts_frees_its_slot(qtbot, context, dataset, tmp_path):
    command = stand_in(tmp_path, EMIT + "time.sleep(30)\n")
    [job] = queue(context, dataset)
    pool = WorkerPool(context.database, context.home, 1, command=command)
    pool.start()
    qtbot.waitUntil(lambda: bool(pool.running_jobs), timeout=5000)
    pool.stop_all()  # before the trainer has even spawned, or just after
    qtbot.waitUntil(lambda: not pool.running_jobs, timeout=10_000)
    assert get_job(context.database, job.id).status == "interrupted"
    assert pool.shutdown()


def test_the_dispatcher_claims_jobs_off_the_thread_that_owns_the_pool(
    qtbot, context, dataset, tmp_path, monkeypatch
):
    """The claim (a conditional UPDATE) and the orphan check are database work: in the window
    they would stall the GUI thread, so they run on the pool's claim thread."""
    import threading

    import app.workers.pool as pool_module

    threads: dict[str, set[str]] = {"claim": set(), "orphans": set()}

    def recorded(name, real):
        def wrapper(*args, **kwargs):
            threads[name].add(threading.current_thread().name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(pool_module, "claim", recorded("claim", pool_module.claim))
    monkeypatch.setattr(
        pool_module, "interrupt_orphans", recorded("orphans", pool_module.interrupt_orphans)
    )
    command = stand_in(tmp_path, EMIT + 'emit(event="finished", status="completed")\n')
    jobs = queue(context, dataset, 3)
    pool = WorkerPool(context.database, context.home, 2, command=command)
    finished = run_until_idle(qtbot, pool, jobs)
    assert set(finished.values()) == {"completed"}
    main = threading.main_thread().name
    assert threads["claim"] and main not in threads["claim"]
    assert threads["orphans"] and main not in threads["orphans"]
