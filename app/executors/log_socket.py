"""The live driver log of a Ray job over its WebSocket (`/api/jobs/{id}/logs/tail`).

The head sends the log from its start in text frames of a few lines (a frame can end in the
middle of a line), then closes with code 1000 once the job has ended and the log is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from app.executors import errors
from app.executors.errors import ClusterUnreachable, ExecutorError, RemoteJobNotFound
from app.executors.ray_client import is_loopback

_MAX_FRAME_BYTES = 16 * 1024 * 1024  # Ray sends at most 20 000 characters a frame
_OPEN_TIMEOUT_S = 10.0
# The head's handler only ever sends (ray/dashboard/modules/job/job_head.py, 2.60): aiohttp
# answers pings and close frames in receive(), which it never calls. A keepalive ping would go
# unanswered and drop the stream every 40 s, and a close we start (the app stops following) would
# wait out the whole close timeout. So no pings, and a short wait for a close that never comes.
_CLOSE_TIMEOUT_S = 0.5


class LogStreamLost(ClusterUnreachable):
    """The log socket closed before the head said the log was over: reconnect and catch up."""


def tail(url: str, headers: dict[str, str], job_id: str, base_url: str) -> Iterator[str]:
    """The frames of the log at `url`, as text, until the head closes the socket cleanly."""
    from urllib.parse import urlsplit

    from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
    from websockets.sync.client import connect

    # Like the REST client: a proxy from the environment must not carry loopback traffic.
    proxy: bool | None = None if is_loopback(urlsplit(url).hostname or "") else True
    try:
        with connect(
            url,
            additional_headers=headers,
            open_timeout=_OPEN_TIMEOUT_S,
            max_size=_MAX_FRAME_BYTES,
            proxy=proxy,  # type: ignore[arg-type]  # True means "from the environment"
            compression=None,
            ping_interval=None,
            close_timeout=_CLOSE_TIMEOUT_S,
        ) as socket:
            try:
                for frame in socket:
                    yield frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            except ConnectionClosedOK:
                return
            except ConnectionClosedError as error:
                raise LogStreamLost(
                    f"The log of job {job_id} stopped coming from {base_url} ({error}); "
                    "the app reconnects and catches up."
                ) from None
    except ExecutorError:
        raise
    except (OSError, TimeoutError) as error:
        raise errors.unreachable(base_url, str(error) or type(error).__name__) from error
    except Exception as error:
        raise _handshake_error(error, job_id, base_url) from error


def _handshake_error(error: Exception, job_id: str, base_url: str) -> ExecutorError:
    from websockets.exceptions import InvalidStatus, WebSocketException

    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status in (401, 403):
            return errors.auth_failed(base_url, status)
        if status == 404:
            return RemoteJobNotFound(
                f"The Ray cluster at {base_url} does not know job {job_id}; resume or retry it.",
                status=404,
            )
        return ClusterUnreachable(
            f"The Ray cluster at {base_url} refused job {job_id}'s log stream (HTTP {status}); "
            "check the cluster and try again.",
            status=status,
        )
    if isinstance(error, WebSocketException):
        return errors.unreachable(base_url, f"the log stream failed: {error}")
    raise error  # not a network error: a bug, raised as it is
