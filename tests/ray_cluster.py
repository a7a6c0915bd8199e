"""A real Ray head on 127.0.0.1 for the integration tier (tests marked `ray`).

`ray start --head --block` runs as a child of the test session, in its own process group, with a
short `--temp-dir` (Ray's unix socket paths must stay short) and free ports, and is stopped by
its process id: SIGTERM to `ray start` (it drains and stops what it started), then SIGKILL to
whatever of it is left. Never `ray stop`, which kills every Ray process on the machine by name.

What the "cluster" has, as a real one would: the venv's Python first on its PATH (the job's
`python` is the one with torch), the tiny test model in its Hugging Face cache under an id
(a job on a cluster names its base by id, not by a path of the app's machine), no network
(HF_HUB_OFFLINE), and the S3-compatible test server (moto, on 127.0.0.1) as its AWS endpoint.

Without `ray` installed (the `ray-tier` install) the tier is skipped, saying why; with
MTM_REQUIRE_RAY=1 (CI) that is a failure instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.training_fixtures import build_tiny_model

REQUIRE_VARIABLE = "MTM_REQUIRE_RAY"
MODEL_ID = "mtm-test/tiny-llama"  # the tiny model, as the cluster's Hugging Face cache holds it
_COMMIT = "0" * 39 + "1"
_START_TIMEOUT_S = 120.0
_STOP_GRACE_S = 20.0
S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class RayHead:
    """A running head: its dashboard URL, and what its jobs see."""

    url: str
    pid: int
    temp_dir: Path
    log: Path
    hf_home: Path  # the cluster's Hugging Face cache, holding MODEL_ID
    s3_endpoint: str  # the cluster's AWS_ENDPOINT_URL

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def ray_executable() -> Path | None:
    """The `ray` command of this Python (the venv's), else one on PATH; None without Ray."""
    if importlib.util.find_spec("ray") is None:
        return None
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return beside
    found = shutil.which("ray")
    return Path(found) if found else None


def require_ray() -> Path:
    """The `ray` command, or a skip (a failure under MTM_REQUIRE_RAY=1) saying why not."""
    command = ray_executable()
    if command is not None:
        return command
    reason = (
        "the Ray integration tier needs ray[default] in this environment "
        "(pip install 'ray[default]', or `make ray-tier`)"
    )
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def install_in_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> None:
    """`folder`'s files as the snapshot of `repo_id` in the Hugging Face cache at `hf_home`,
    where an offline from_pretrained(repo_id) finds them."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / _COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file():
            shutil.copy2(path, snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(_COMMIT)


def head_environment(hf_home: Path, s3_endpoint: str, mtm_home: Path) -> dict[str, str]:
    """The environment `ray start` (and so every job's driver) runs in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    env.pop("PYTHONPATH", None)  # the job must import the app from its working_dir bundle
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        MTM_HOME=str(mtm_home),
        AWS_ENDPOINT_URL=s3_endpoint,
        RAY_USAGE_STATS_ENABLED="0",
        **S3_ENVIRONMENT,
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    return env


def start_head(
    ray: Path, temp_dir: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """`ray start --head --block` on free ports; returns the process and the dashboard URL
    once GET /api/version answers."""
    dashboard = free_port()
    command = [
        str(ray),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        # Ray's fixed default ports, moved so that another head on this machine does not clash.
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--object-store-memory=100000000",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    log = temp_dir / "head.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=temp_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_until_up(process, url, log)
    except BaseException:
        stop_head(process)
        raise
    return process, url


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + _START_TIMEOUT_S
    with httpx.Client(base_url=url, trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/api/version").status_code == 200:
                    return
            time.sleep(0.25)
    raise RuntimeError(f"the Ray head did not answer within {_START_TIMEOUT_S:g} s:\n{_tail(log)}")


def stop_head(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `ray start` (it drains, then stops its processes), then SIGKILL to what is
    left of it: its process group and the workers that made sessions of their own."""
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    _gone, alive = psutil.wait_procs(descendants, timeout=5)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    psutil.wait_procs(alive, timeout=5)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """One head for the whole session (starting one takes seconds), with an S3 server beside."""
    ray = require_ray()
    base = tmp_path_factory.getbasetemp()
    hf_home = base / "ray-cluster-hf"
    install_in_hub_cache(hf_home, MODEL_ID, build_tiny_model(base / "tiny-model"))
    # /tmp/rayXXXX: the session folder under it holds unix sockets, whose paths are short.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    with s3_server() as endpoint:
        env = head_environment(hf_home, endpoint, base / "ray-cluster-home")
        try:
            started = time.monotonic()
            process, url = start_head(ray, temp_dir, env)
            print(f"[ray head up in {time.monotonic() - started:.1f} s at {url}]")
            try:
                yield RayHead(url, process.pid, temp_dir, temp_dir / "head.log", hf_home, endpoint)
            finally:
                started = time.monotonic()
                stop_head(process)
                print(f"[ray head down in {time.monotonic() - started:.1f} s]")
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
