"""A stand-in Ray head for tests: the Jobs REST API over httpx.MockTransport, with the request
and answer shapes RAY_JOBS.md §3 observed on a real Ray 2.60 head, and the log WebSocket on a
real local socket (websockets' sync server in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

VERSION = {
    "version": "4",
    "ray_version": "2.60.0",
    "ray_commit": "0d3f2b1c5e8a",
    "session_name": "session_2026-12-01_10-00-00_000000_1",
}


def job_details(submission_id: str, status: str = "PENDING", **changes: Any) -> dict[str, Any]:
    """A JobDetails answer as GET /api/jobs/{id} gives it."""
    details: dict[str, Any] = {
        "type": "SUBMISSION",
        "job_id": None,
        "submission_id": submission_id,
        "driver_info": None,
        "status": status,
        "entrypoint": "python -m app.training --job-dir /shared/jobs/" + submission_id,
        "message": "Job has not started yet. It may be waiting for resources.",
        "error_type": None,
        "start_time": 1764583200000,
        "end_time": None,
        "metadata": {"app_job_id": submission_id},
        "runtime_env": {"working_dir": "gcs://_ray_pkg_282cc49cdefdf01a.zip"},
        "driver_agent_http_address": "http://127.0.0.1:52365",
        "driver_node_id": "c3b1f0a2",
        "driver_exit_code": None,
    }
    details.update(changes)
    return details


@dataclass
class FakeHead:
    """The head's state and the requests it saw; `transport` serves them."""

    token: str | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    packages: dict[str, bytes] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    body_limit: int = 104857600

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        refused = self._auth(request)
        if refused is not None:
            return refused
        method, parts = request.method, request.url.path.strip("/").split("/")
        if parts == ["api", "version"]:
            return httpx.Response(200, json=VERSION)
        if parts[:2] == ["api", "packages"]:
            return self._package(method, "/".join(parts[2:]), request)
        if parts[:2] == ["api", "jobs"]:
            return self._jobs(method, parts[2:], request)
        return httpx.Response(404, text="404: Not Found")

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        if self.token is None:
            return None
        sent = request.headers.get("Authorization")
        if sent is None:
            return httpx.Response(401, text="Unauthorized: missing authentication token")
        if sent != f"Bearer {self.token}":
            return httpx.Response(403, text="Forbidden: invalid authentication token")
        return None

    def _package(self, method: str, name: str, request: httpx.Request) -> httpx.Response:
        if method == "GET":
            return httpx.Response(200 if name in self.packages else 404, text="")
        if len(request.content) > self.body_limit:
            return httpx.Response(413, text="Maximum request body size 104857600 exceeded")
        self.packages[name] = request.content
        return httpx.Response(200, text="")

    def _jobs(self, method: str, rest: list[str], request: httpx.Request) -> httpx.Response:
        if not rest or rest == [""]:
            if method == "GET":
                return httpx.Response(200, json=list(self.jobs.values()))
            return self._submit(json.loads(request.content))
        job_id = rest[0]
        if job_id not in self.jobs:
            return httpx.Response(404, text=f"Job {job_id} does not exist")
        return self._job(method, job_id, rest[1:])

    def _submit(self, body: dict[str, Any]) -> httpx.Response:
        if "entrypoint" not in body:
            return httpx.Response(
                400,
                text="Traceback (most recent call last):\nTypeError: JobSubmitRequest.__init__() "
                "missing 1 required positional argument: 'entrypoint'",
            )
        sid = body.get("submission_id") or "raysubmit_abc"
        if sid in self.jobs:
            return httpx.Response(
                500,
                text="Traceback (most recent call last):\n  ...\n"
                f"ValueError: Job with submission_id {sid} already exists. Please use a "
                "different submission_id.",
            )
        self.jobs[sid] = job_details(
            sid,
            entrypoint=body["entrypoint"],
            metadata=body.get("metadata"),
            runtime_env=body.get("runtime_env"),
        )
        self.logs.setdefault(sid, "")
        return httpx.Response(200, json={"job_id": sid, "submission_id": sid})

    def _job(self, method: str, job_id: str, rest: list[str]) -> httpx.Response:
        job = self.jobs[job_id]
        if method == "GET" and not rest:
            return httpx.Response(200, json=job)
        if method == "GET" and rest == ["logs"]:
            return httpx.Response(200, json={"logs": self.logs[job_id]})
        if method == "POST" and rest == ["stop"]:
            live = job["status"] in ("PENDING", "RUNNING")
            if live:
                job.update(status="STOPPED", message="Job was intentionally stopped.")
            return httpx.Response(200, json={"stopped": live})
        if method == "DELETE" and not rest:
            del self.jobs[job_id]
            return httpx.Response(200, json={"deleted": True})
        return httpx.Response(405, text="405: Method Not Allowed")


@contextmanager
def log_socket_server(
    frames: list[str],
    *,
    status: int | None = None,
    drop: bool = False,
    later: list[str] | None = None,
    hold: threading.Event | None = None,
) -> Iterator[str]:
    """A local WebSocket server that answers a connection with `frames`, then closes with
    1000 (or, with `drop`, breaks the connection instead); connections after the first get
    `later` if given (and are closed cleanly); `status` refuses the handshake; with `hold`,
    the socket stays open after the frames until it is set (a job still running).
    Yields its base URL, http://127.0.0.1:PORT."""
    from websockets.sync.server import serve

    connections: list[Any] = []

    def refuse(connection: Any, _request: Any) -> Any:
        if status is not None:
            return connection.respond(status, "refused\n")
        return None

    def handler(connection: Any) -> None:
        connections.append(connection)
        first = len(connections) == 1 or later is None
        for frame in frames if first else later or []:
            connection.send(frame)
        if hold is not None:
            hold.wait(30)
        if drop and first:
            connection.socket.close()  # no close frame: the client sees a broken connection
        else:
            connection.close(1000)

    with serve(handler, "127.0.0.1", 0, process_request=refuse, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.shutdown()
            thread.join(5)


def mark_orphaned(database: Any, *job_ids: str) -> None:
    """Make running jobs look supervised by a process that is gone: this pid, another start
    time (the pair the app compares to survive pid reuse)."""
    from app.db.models import Job

    with database.session() as session:
        for job_id in job_ids:
            session.get(Job, job_id).pid_started = 1.0


@contextmanager
def other_process() -> Iterator[tuple[int, float]]:
    """A living process other than this one, as (pid, start time): a second window or worker
    that supervises a job."""
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child.pid, psutil.Process(child.pid).create_time()
    finally:
        child.kill()
        child.wait()


def set_owner(database: Any, job_id: str, owner: tuple[int | None, float | None]) -> None:
    from app.db.models import Job

    with database.session() as session:
        job = session.get(Job, job_id)
        job.pid, job.pid_started = owner


@dataclass
class ServedHead:
    """The stand-in head behind a real HTTP server; `arrived` is set as a request comes in,
    and its answer waits while `gate` is clear."""

    head: FakeHead
    url: str
    gate: threading.Event
    arrived: threading.Event


@contextmanager
def serve_over_http(head: FakeHead, wait_s: float = 30.0) -> Iterator[ServedHead]:
    """`head` answering real HTTP requests on 127.0.0.1 (for a client in another process, or
    the real `open_executor`); an answer waits while `gate` is clear, up to `wait_s`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    gate, arrived = threading.Event(), threading.Event()
    gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.set()
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(
                self.command,
                f"http://{self.headers['Host']}{self.path}",
                headers=dict(self.headers.items()),
                content=self.rfile.read(length),
            )
            gate.wait(wait_s)
            answer = head.handle(request)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", "text/plain"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def do_POST(self) -> None:
            self.do_GET()

        def do_PUT(self) -> None:
            self.do_GET()

        def do_DELETE(self) -> None:
            self.do_GET()

        def log_message(self, *_args: object) -> None:
            """Quiet: the test reads what the head saw from FakeHead.requests."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="ray-head-http")
    thread.start()
    try:
        yield ServedHead(head, f"http://127.0.0.1:{server.server_address[1]}", gate, arrived)
    finally:
        gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
