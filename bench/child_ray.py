"""A tiny job on a local Ray head against the same job on this machine.

The head is a real one (`ray start --head --block` on 127.0.0.1, as the integration tier starts
it; needs ray[default]), its storage a folder here. For each run: the seconds from `submit` to
the first progress event the executor hands over (locally: from starting the trainer subprocess
to its first progress line), and each live event's delay, from the trainer's own timestamp on
it to the moment the app has it. The first job on a fresh head is reported apart (the head
starts a worker and unpacks the code bundle), then the median of the warm runs.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.events import ProgressEvent, parse_event
from app.executors.clusters import make_cluster
from app.executors.ray import RayExecutor
from app.executors.ray_client import RayJobsClient
from app.executors.storage import FolderStorage
from app.jobs.spec import SPEC_FILE, load_spec
from bench.common import OUT, ROOT, median, peak_rss_mb
from tests.ray_cluster import (
    MODEL_ID,
    head_environment,
    install_in_hub_cache,
    ray_executable,
    s3_server,
    start_head,
    stop_head,
)
from tests.training_fixtures import build_tiny_model, facts_records, make_job, write_records

RUNS = 4  # the first on the fresh head, then the warm ones
# About 3 s of steps: a dozen progress events (four a second at most) to time.
STEPS = {"epochs": 1000, "max_steps": 100, "save_steps": 100_000, "threads": 1}


def remote_run(executor: RayExecutor, job_id: str, spec_dir: Path) -> tuple[float, list[float]]:
    spec = load_spec(spec_dir / SPEC_FILE)
    start = time.time()
    executor.submit(job_id, spec, fresh=True)
    first, delays = None, []
    for event in executor.follow(job_id):
        now = time.time()
        if event.event != "log":
            delays.append(now - event.time)
        if first is None and isinstance(event, ProgressEvent):
            first = now - start
    if first is None:
        raise SystemExit(f"job {job_id} reported no progress")
    return first, delays


def local_run(job_dir: Path, hf_home: Path) -> tuple[float, list[float]]:
    env = {**_environment(), "HF_HOME": str(hf_home)}
    start = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.training", "--job-dir", str(job_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    first, delays = None, []
    for line in process.stdout:
        now = time.time()
        event = parse_event(line)
        if event.event != "log":
            delays.append(now - event.time)
        if first is None and isinstance(event, ProgressEvent):
            first = now - start
    if process.wait() != 0 or first is None:
        raise SystemExit(f"the local run in {job_dir} failed")
    return first, delays


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def summary(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {
        "median_ms": median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "max_ms": ordered[-1] * 1000,
        "events": len(ordered),
    }


def main() -> None:
    ray = ray_executable()
    if ray is None:
        raise SystemExit("ray[default] is not installed (make ray-tier)")
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mtm-bench-ray-"))
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        hf_home = work / "hf"
        install_in_hub_cache(hf_home, MODEL_ID, build_tiny_model(OUT / "tiny-model"))
        records = write_records(work / "data", facts_records(1))
        make_job(work / "spec", MODEL_ID, records, **STEPS)
        with s3_server() as endpoint:
            env = head_environment(hf_home, endpoint, work / "cluster-home")
            started = time.monotonic()
            process, url = start_head(ray, temp_dir, env)
            head_start = time.monotonic() - started
            storage = FolderStorage(work / "shared")
            cluster = make_cluster(name="bench", url=url, storage=storage.url, cpus=1)
            executor = RayExecutor(cluster, RayJobsClient(url), storage)
            remote: list[tuple[float, list[float]]] = []
            local: list[tuple[float, list[float]]] = []
            try:
                for run in range(RUNS):
                    remote.append(remote_run(executor, f"bench-{run}", work / "spec"))
                    job_dir = work / f"local-{run}"
                    shutil.copytree(work / "spec", job_dir)
                    local.append(local_run(job_dir, hf_home))
            finally:
                executor.close()
                stop_head(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
    warm_remote = [first for first, _ in remote[1:]]
    report = {
        "head_start_s": head_start,
        "remote_first_progress_cold_s": remote[0][0],
        "remote_first_progress_s": median(warm_remote),
        "local_first_progress_s": median([first for first, _ in local[1:]]),
        "remote_delay": summary([d for _, delays in remote[1:] for d in delays]),
        "local_delay": summary([d for _, delays in local[1:] for d in delays]),
        "runs": RUNS,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(report))


main()
