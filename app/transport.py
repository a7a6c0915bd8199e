"""What went wrong on the way to a server, in the few kinds the app words differently.

httpx raises a family of RequestError classes, and a name lookup that fails hides in its cause
chain; the Ollama client and the Ray client read them here, once, and each says the kind in its
own sentence.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class Failure(StrEnum):
    CONNECT_TIMEOUT = "no answer to the connection"
    HOST_UNKNOWN = "host not found"
    REFUSED = "connection refused"
    READ_TIMEOUT = "no answer in time"
    LOST = "the connection broke"
    TIMEOUT = "timed out"  # waiting for a connection from the pool, or writing
    OTHER = "failed"


def classify(error: httpx.RequestError) -> Failure:
    """The kind of a transport error (httpx is imported by whoever caught it)."""
    import httpx

    if isinstance(error, httpx.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT
    if isinstance(error, httpx.ConnectError):
        return Failure.HOST_UNKNOWN if caused_by(error, socket.gaierror) else Failure.REFUSED
    if isinstance(error, httpx.ReadTimeout):
        return Failure.READ_TIMEOUT
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Failure.LOST
    if isinstance(error, httpx.TimeoutException):
        return Failure.TIMEOUT
    return Failure.OTHER


def caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is anywhere in the error's chain of causes."""
    seen: BaseException | None = error
    for _ in range(10):  # the chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
