"""A typed client of the Ray Jobs REST API on the dashboard port (RAY_JOBS.md §3), without `ray`.

Synchronous on purpose: a remote job is followed from a worker thread, like a local trainer's
pipe. Every failure comes out as an ExecutorError with one sentence for the user; an httpx or
websockets exception never escapes. The token goes in `Authorization: Bearer` on every request,
the log WebSocket included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import APP_ID, __version__
from app.executors import errors
from app.executors.errors import (
    BadClusterError,
    ClusterUnreachable,
    ExecutorError,
    RemoteJobNotFound,
)
from app.transport import Failure, classify

if TYPE_CHECKING:
    import httpx

DEFAULT_PORT = 8265
SUPPORTED_API_VERSIONS = ("4",)  # what GET /api/version says on Ray 2.x heads
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the head's request body limit (HTTP 413 above it)

JobStatus = Literal["PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"]
TERMINAL: frozenset[str] = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})
RUNTIME_ENV_FAILURE = "RUNTIME_ENV_SETUP_FAILURE"


class _Answer(BaseModel):
    # The head adds fields between versions; unknown ones are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


_AnswerT = TypeVar("_AnswerT", bound=_Answer)


class RayVersion(_Answer):
    version: str
    ray_version: str = ""
    ray_commit: str = ""
    session_name: str = ""


class JobSubmission(_Answer):
    """The body of POST /api/jobs/; its submission id is the job id, so submits are idempotent."""

    entrypoint: str = Field(min_length=1)
    submission_id: str
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None


class JobDetails(_Answer):
    """GET /api/jobs/{id}: one job as the head knows it (times in ms since the epoch)."""

    submission_id: str | None = None
    job_id: str | None = None
    type: str = "SUBMISSION"
    status: JobStatus
    entrypoint: str = ""
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_exit_code: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def runtime_env_failed(self) -> bool:
        return self.error_type == RUNTIME_ENV_FAILURE


class RayJobsClient:
    """One Ray head; use it as `with RayJobsClient(url, token=...) as client:` or call close()."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        self.base_url = normalise_url(base_url)
        self._token = token
        self._read_timeout = read_timeout
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            transport=transport,
            headers=self._headers(),
            # A proxy from the environment must not carry requests meant for this machine.
            trust_env=not is_loopback(urlsplit(self.base_url).hostname or ""),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the head ----------------------------------------------------------------------------

    def version(self) -> RayVersion:
        """What GET /api/version says."""
        action = "report its version"
        return self._model(RayVersion, self._json("GET", "/api/version", action), action)

    def check(self) -> RayVersion:
        """The version, after making sure this app speaks it (ClusterVersionUnsupported if not)."""
        version = self.version()
        if version.version not in SUPPORTED_API_VERSIONS:
            raise errors.version_unsupported(self.base_url, version.version, SUPPORTED_API_VERSIONS)
        return version

    # -- packages (the working_dir) ----------------------------------------------------------

    def package_exists(self, uri: str) -> bool:
        """Whether the head already holds the package `gcs://_ray_pkg_<hash>.zip`."""
        response = self._send("GET", _package_path(uri), f"look up {uri}")
        if response.status_code == 404:
            return False
        self._raise_for_status(response, f"look up {uri}")
        return True

    def upload_package(self, uri: str, data: bytes) -> None:
        """PUT the zip; over MAX_UPLOAD_BYTES the head answers 413, which says: use a bucket."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise errors.too_large(self.base_url, len(data))
        response = self._send(
            "PUT",
            _package_path(uri),
            f"take {uri}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code == 413:
            raise errors.too_large(self.base_url, len(data))
        self._raise_for_status(response, f"take {uri}")

    def ensure_package(self, uri: str, data: bytes) -> bool:
        """Upload the package unless the head has it; True when it was uploaded."""
        if self.package_exists(uri):
            return False
        self.upload_package(uri, data)
        return True

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, submission: JobSubmission) -> bool:
        """Submit the job; False when the head already has this submission id (not an error:
        submitting is idempotent, so a retry after a lost answer is safe)."""
        action = f"start job {submission.submission_id}"
        body = submission.model_dump(mode="json", exclude_none=True)
        response = self._send("POST", "/api/jobs/", action, json=body)
        if response.status_code == 500 and b"already exists" in response.content:
            return False
        self._raise_for_status(response, action)
        return True

    def job(self, submission_id: str) -> JobDetails:
        """The job as the head knows it; RemoteJobNotFound when it does not."""
        action = f"report job {submission_id}"
        data = self._json("GET", f"/api/jobs/{submission_id}", action, job=submission_id)
        return self._model(JobDetails, data, action)

    def jobs(self) -> list[JobDetails]:
        """Every job the head knows (since its last restart)."""
        action = "list its jobs"
        data = self._json("GET", "/api/jobs/", action)
        # Ray 2.x answers an array; older heads a dict keyed by id.
        items = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise self._unreadable(action, "an answer that is not a list")
        return [self._model(JobDetails, item, action) for item in items]

    def stop(self, submission_id: str) -> bool:
        """Signal the job to stop; False when it had already ended."""
        action = f"stop job {submission_id}"
        data = self._json("POST", f"/api/jobs/{submission_id}/stop", action, job=submission_id)
        return bool(_field(data, "stopped"))

    def delete(self, submission_id: str) -> bool:
        """Forget an ended job (the head refuses a live one)."""
        action = f"delete job {submission_id}"
        data = self._json("DELETE", f"/api/jobs/{submission_id}", action, job=submission_id)
        return bool(_field(data, "deleted"))

    def logs(self, submission_id: str) -> str:
        """The job's whole driver log so far."""
        action = f"send job {submission_id}'s log"
        data = self._json("GET", f"/api/jobs/{submission_id}/logs", action, job=submission_id)
        logs = _field(data, "logs")
        if not isinstance(logs, str):
            raise self._unreadable(action, "no log text")
        return logs

    def tail_logs(self, submission_id: str) -> Iterator[str]:
        """The driver log from its start, frame by frame (a frame can end mid-line), until the
        head closes the socket after the job ends. A dropped connection raises LogStreamLost."""
        from app.executors.log_socket import tail

        url = websocket_url(self.base_url, f"/api/jobs/{submission_id}/logs/tail")
        return tail(url, self._headers(), submission_id, self.base_url)

    # -- plumbing ----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"{APP_ID}/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _send(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            return self._client.request(method, path, **kwargs)
        except httpx.RequestError as error:
            raise self._transport_error(error, action) from error

    def _json(
        self, method: str, path: str, action: str, *, json: Any = None, job: str | None = None
    ) -> Any:
        response = self._send(method, path, action, json=json)
        if response.status_code == 404 and job is not None:
            raise RemoteJobNotFound(
                f"The Ray cluster at {self.base_url} does not know job {job} (a head restart "
                "forgets its jobs); resume or retry it.",
                status=404,
            )
        self._raise_for_status(response, action)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._unreadable(action, "an answer that is not JSON") from None

    def _model(self, model: type[_AnswerT], data: Any, action: str) -> _AnswerT:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            item = error.errors()[0]
            where = ".".join(str(part) for part in item["loc"])
            raise self._unreadable(action, f"{where}: {item['msg']}") from None

    def _raise_for_status(self, response: httpx.Response, action: str) -> None:
        status = response.status_code
        if response.is_success:
            return
        if status in (401, 403):
            raise errors.auth_failed(self.base_url, status)
        said = errors.quote(response.content.decode("utf-8", "replace")) or f"HTTP {status}"
        verb = "refused" if 400 <= status < 500 else "failed"
        raise ExecutorError(
            f"The Ray cluster at {self.base_url} {verb} to {action} (HTTP {status}: {said}); "
            "check the cluster and try again.",
            status=status,
        )

    def _unreadable(self, action: str, what: str) -> ExecutorError:
        return ExecutorError(
            f"The Ray cluster at {self.base_url} sent {what} when asked to {action}; check that "
            "the URL points at a Ray dashboard."
        )

    def _transport_error(self, error: httpx.RequestError, action: str) -> ExecutorError:
        failure = classify(error)
        if failure in (Failure.READ_TIMEOUT, Failure.TIMEOUT):
            return ClusterUnreachable(
                f"The Ray cluster at {self.base_url} did not answer within "
                f"{self._read_timeout:g} s when asked to {action}; try again."
            )
        if failure is Failure.OTHER:
            return errors.unreachable(self.base_url, f"{type(error).__name__}: {error}")
        return errors.unreachable(self.base_url, failure.value)


def normalise_url(url: str) -> str:
    """`http(s)://host[:port]` without a trailing slash; a bare host gets http:// and :8265."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    problem = ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        problem = "it has no valid port"
    else:
        if parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it must have nothing after the port"
    if problem:
        raise BadClusterError(
            f'"{url}" is not a Ray dashboard URL ({problem}); use one like '
            f"http://head:{DEFAULT_PORT}."
        )
    netloc = parts.netloc if port or parts.scheme == "https" else f"{parts.netloc}:{DEFAULT_PORT}"
    return f"{parts.scheme}://{netloc}"


def websocket_url(base_url: str, path: str) -> str:
    """ws:// for http://, wss:// for https://."""
    return "ws" + base_url.removeprefix("http") + path


def insecure(url: str) -> bool:
    """Plain http to another machine: the token and the data cross the network in clear."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _package_path(uri: str) -> str:
    """`gcs://_ray_pkg_x.zip` → `/api/packages/gcs/_ray_pkg_x.zip`."""
    protocol, separator, name = uri.partition("://")
    if not separator or not name or "/" in name:
        raise BadClusterError(f'"{uri}" is not a package URI; expected gcs://_ray_pkg_<hash>.zip.')
    return f"/api/packages/{protocol}/{name}"


def _field(data: Any, name: str) -> Any:
    return data.get(name) if isinstance(data, dict) else None
