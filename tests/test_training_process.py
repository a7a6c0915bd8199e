"""The trainer as the app runs it: a subprocess that reports on stdout, stops on SIGTERM and
does not outlive the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.events import parse_event
from tests import training_fixtures
from tests.training_fixtures import (
    REPO_ROOT,
    facts_records,
    make_job,
    read_events_file,
    start_trainer,
    trainer_command,
    write_records,
)

tiny_model = training_fixtures.tiny_model
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def endless_job(tmp_path: Path, tiny_model: Path) -> Path:
    """A job that would train for a long time: only a stop ends it."""
    records = write_records(tmp_path / "dataset", facts_records(4))
    return make_job(tmp_path / "job", tiny_model, records, epochs=1000, save_steps=100_000)


def read_until_progress(process: subprocess.Popen[bytes]) -> list[bytes]:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if parse_event(line).event == "progress":
            return lines
    _, stderr = process.communicate()
    pytest.fail(f"the trainer ended before training: {lines} {stderr.decode()[-2000:]}")


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_reports_cancelled(tmp_path, tiny_model):
    job = endless_job(tmp_path, tiny_model)
    process = start_trainer(job)
    lines = read_until_progress(process)
    process.send_signal(signal.SIGTERM)
    rest, stderr = process.communicate(timeout=120)
    lines += rest.splitlines(keepends=True)
    assert process.returncode == 0, stderr.decode()[-2000:]
    events = [parse_event(line) for line in lines]  # stdout holds events and nothing else
    finished = events[-1]
    assert finished.event == "finished" and finished.status == "cancelled"
    checkpoint = [e for e in events if e.event == "checkpoint"][-1]
    assert (job / checkpoint.path / "trainable.safetensors").is_file()
    assert checkpoint.step == finished.summary.steps > 0
    assert read_events_file(job) == events


def test_the_trainer_stops_when_the_process_that_started_it_dies(tmp_path, tiny_model):
    job = endless_job(tmp_path, tiny_model)
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, json.dumps(trainer_command(job))],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    trainer = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == b"training"
    parent.kill()
    parent.wait()
    parent.stdout.close()
    _wait_until_gone(trainer, timeout=120)
    events = read_events_file(job)
    assert events[-1].event == "finished" and events[-1].status == "interrupted"
    assert (job / "checkpoints").is_dir()


# The supervising process: starts the trainer, reads until training runs, then waits to be killed.
_PARENT = textwrap.dedent(
    """
    import json, subprocess, sys, time
    trainer = subprocess.Popen(json.loads(sys.argv[1]), stdout=subprocess.PIPE)
    print(trainer.pid, flush=True)
    for line in trainer.stdout:
        if b'"progress"' in line:
            print("training", flush=True)
            break
    time.sleep(600)
    """
)


def _wait_until_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the trainer kept training after its parent died")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel whether the process exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")  # an exited process that nobody has reaped yet is gone


def test_a_bad_spec_is_reported_on_stdout_with_a_non_zero_exit(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "spec.json").write_text('{"base_model": "x"}')
    result = subprocess.run(
        trainer_command(job),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    (line,) = result.stdout.splitlines()
    event = parse_event(line)
    assert event.event == "error" and event.kind == "bad_spec"
    assert "dataset is missing" in event.message
    assert read_events_file(job) == [event]


def test_a_job_folder_that_does_not_exist_is_reported_too(tmp_path):
    result = subprocess.run(
        trainer_command(tmp_path / "nowhere"),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "cannot be read" in parse_event(result.stdout).message


def test_the_frozen_build_flag_runs_the_same_trainer(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "spec.json").write_text("[]")
    result = subprocess.run(
        [sys.executable, "-m", "app", "--run-training", "--job-dir", str(job)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert parse_event(result.stdout).kind == "bad_spec"


def test_a_channel_whose_reader_closed_stops_the_run_and_keeps_writing_the_file(tmp_path):
    from app.events import LogEvent
    from app.training.channel import EventChannel, StopRequest

    read_end, write_end = os.pipe()
    os.close(read_end)
    stop = StopRequest()
    channel = EventChannel(write_end, tmp_path / "events.jsonl", stop)
    try:
        channel.emit(LogEvent(message="one"))
        channel.emit(LogEvent(message="two"))
    finally:
        channel.close()
        os.close(write_end)
    assert stop.reason == "interrupted" and channel.fd is None
    assert [e.message for e in read_events_file(tmp_path)] == ["one", "two"]


def test_a_stop_keeps_its_first_reason():
    from app.training.channel import StopRequest

    stop = StopRequest()
    stop.request("cancelled")
    stop.request("interrupted")
    assert stop.reason == "cancelled"


def test_progress_is_due_at_first_then_a_few_times_a_second_and_always_at_the_end():
    from app.training.channel import ProgressThrottle

    throttle = ProgressThrottle(interval_s=60)
    assert throttle.due()
    assert not throttle.due()
    assert throttle.due(final=True)


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"),
    ],
)
def test_every_kind_of_out_of_memory_is_recognised(error):
    from app.training.errors import error_event

    event = error_event(error, "cpu")
    assert event.kind == "out_of_memory" and "cpu's memory" in event.message
