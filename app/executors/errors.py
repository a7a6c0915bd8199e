"""What goes wrong with a cluster, told to the user in one sentence that says what to do."""

from __future__ import annotations

import re

from app.errors import BadInputError, KnownError, NotFoundError

_QUOTE_LIMIT = 300
LOG_TAIL_LINES = 5  # a failed job's last log lines quoted in its error


class ExecutorError(KnownError):
    """A cluster could not be reached, refused a request, or ran a job that failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status; None when no response came


class ClusterUnreachable(ExecutorError):
    """Nothing answers at the cluster's URL, or the connection was lost."""


class ClusterAuthError(ExecutorError):
    """The head refused the token: none was sent (401) or it is wrong (403)."""


class ClusterVersionUnsupported(ExecutorError):
    """The head speaks a Jobs API version this app does not know."""


class UploadTooLarge(ExecutorError):
    """The head refused an upload over its request size limit (HTTP 413)."""


class RuntimeEnvFailed(ExecutorError):
    """The cluster could not set up the job's runtime environment."""


class RemoteJobFailed(ExecutorError):
    """The job itself failed on the cluster."""


class RemoteJobNotFound(ExecutorError, NotFoundError):
    """The head does not know the submission id (a head restart forgets every job)."""


class StorageError(ExecutorError):
    """The shared storage could not be read or written."""


class BadClusterError(ExecutorError, BadInputError):
    """A cluster's settings (name, URL, storage, resources) cannot be used as they are."""


def unreachable(url: str, reason: str) -> ClusterUnreachable:
    return ClusterUnreachable(
        f"The Ray cluster at {url} cannot be reached ({reason}); check the URL and that the "
        "head is running."
    )


def auth_failed(url: str, status: int) -> ClusterAuthError:
    if status == 401:
        return ClusterAuthError(
            f"The Ray cluster at {url} asks for a token and none was sent; add one with "
            "`mtm clusters add NAME --url URL --storage PATH --token-env VAR`.",
            status=status,
        )
    return ClusterAuthError(
        f"The Ray cluster at {url} refused the token (HTTP 403); set the right one with "
        "`mtm clusters add NAME ... --token-env VAR`.",
        status=status,
    )


def version_unsupported(
    url: str, version: str, known: tuple[str, ...]
) -> ClusterVersionUnsupported:
    return ClusterVersionUnsupported(
        f"The Ray cluster at {url} speaks Jobs API version {version!r} and this app knows "
        f"{', '.join(known)}; use a Ray 2.x head or update the app."
    )


def too_large(url: str, size: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"The job's code bundle ({size / 2**20:.1f} MiB) is over the Ray head's upload limit at "
        f"{url}; keep datasets and models out of it, or give the cluster an s3:// storage bucket.",
        status=413,
    )


def runtime_env_failed(job_id: str, message: str) -> RuntimeEnvFailed:
    return RuntimeEnvFailed(
        f"The cluster could not set up job {job_id}'s runtime environment ({quote(message)}); "
        "check that the cluster's Python has the app's training packages and retry."
    )


def job_failed(job_id: str, message: str, log_tail: list[str]) -> RemoteJobFailed:
    last = " | ".join(line.strip() for line in log_tail[-LOG_TAIL_LINES:] if line.strip())
    said = quote(last or message) or "no output"
    return RemoteJobFailed(f"Job {job_id} failed on the cluster (last output: {said}); retry it.")


def job_killed(job_id: str, signal_name: str, log_tail: list[str]) -> RemoteJobFailed:
    """The job's process was killed by a signal (not stopped by the app)."""
    last = " | ".join(line.strip() for line in log_tail[-LOG_TAIL_LINES:] if line.strip())
    said = quote(last) or "no output"
    if signal_name == "SIGKILL":
        cause = "often the out-of-memory killer: try a smaller batch or a node with more memory"
    else:
        cause = "something on the node ended it"
    return RemoteJobFailed(
        f"Job {job_id} was killed on the cluster by {signal_name} ({cause}; last output: "
        f"{said}); resume or retry it."
    )


def killed_by(exit_code: int | None) -> str | None:
    """The signal's name when `exit_code` says a process was killed by one (-9, or 137 from
    the shell), else None."""
    import signal

    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128
    if exit_code < 0 or 128 < exit_code < 128 + 65:
        try:
            return signal.Signals(number).name
        except ValueError:
            return None
    return None


def quote(text: str) -> str:
    """A server's words made fit for a sentence: one line, not too long, no final stop."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > _QUOTE_LIMIT:
        text = "…" + text[-(_QUOTE_LIMIT - 1) :].lstrip()  # a traceback's end says the most
    return text.rstrip(".")
