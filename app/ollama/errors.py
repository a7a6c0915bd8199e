"""What goes wrong when talking to Ollama, told to the user in one sentence.

Ollama reports every error as `{"error": "<message>"}`: with an HTTP error status when nothing was
written yet, or as the last NDJSON line of a 200 stream. The functions below turn either into an
OllamaError whose message says what failed and quotes Ollama's own words, which are usually the most
precise thing there is to say ("unsupported architecture", "model 'x:latest' not found").
"""

from __future__ import annotations

import re

import orjson

from app.errors import BadInputError, KnownError

# Ollama's messages are quoted in the sentence; one that long (a Go stack, a whole JSON document)
# is cut, and the full text stays in `server_message`.
_QUOTE_LIMIT = 400


class OllamaError(KnownError):
    """Ollama could not be reached, refused a request, or failed while answering it."""

    def __init__(
        self, message: str, *, status: int | None = None, server_message: str = ""
    ) -> None:
        super().__init__(message)
        # 200 for an error line inside a 200 stream; None when no response came at all.
        self.status = status
        # Ollama's own {"error": ...} text, untouched ("" when there was none).
        self.server_message = server_message


class OllamaUnavailable(OllamaError):
    """Nothing answers at the URL, or the connection was not accepted in time."""


class OllamaTooOld(OllamaError):
    """The server is older than the oldest version the app can work with."""


class OllamaNotFound(OllamaError):
    """Ollama has no such model (a 404 with Ollama's JSON error, not a missing endpoint)."""


class OllamaBadURL(OllamaError, BadInputError):
    """The Ollama URL in the settings is not an http(s)://host:port address."""


def sentence(text: str) -> str:
    """`text` with a full stop at the end, unless it already ends a sentence."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def readable(server_message: str) -> str:
    """Ollama's message made fit to quote: one line, unwrapped, not too long.

    llama-server's errors arrive as a JSON document inside the string (`{"error":{"message":...}}`,
    e.g. for a prompt that does not fit with `truncate:false`); its inner message is what matters.
    """
    text = server_message.strip()
    if text.startswith("{"):
        text = _inner_message(text) or text
    text = re.sub(r"\s+", " ", text)
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 1].rstrip() + "…"
    return text.rstrip(".")


def _inner_message(text: str) -> str | None:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    while isinstance(document, dict):
        inner = document.get("error", document.get("message"))
        if isinstance(inner, str):
            return inner
        document = inner
    return None


def server_error_text(body: bytes) -> str | None:
    """The `error` string in a JSON body, or None when the body is not Ollama's error object."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return None


def status_error(
    *, status: int, body: bytes, url: str, method: str, path: str, action: str
) -> OllamaError:
    """The error for a response with an HTTP error status that came before any stream.

    `action` says what was asked, as a verb phrase that follows "to": `create "tiny-ft"`.
    """
    server_message = server_error_text(body)
    if server_message is None:
        return _error_without_message(
            status=status, body=body, url=url, method=method, path=path, action=action
        )
    quoted = readable(server_message)
    if server_message == "path or Modelfile are required":
        # A server before v0.5.5 does not know the JSON form of /api/create (OLLAMA_API.md §0.4).
        from app.ollama.versions import MIN_VERSION, format_version

        return OllamaTooOld(
            f"Ollama at {url} is too old to {action} this way; this app needs "
            f"{format_version(MIN_VERSION)} or newer: update Ollama.",
            status=status,
            server_message=server_message,
        )
    if status == 404:
        return OllamaNotFound(
            f"Ollama could not {action}: {quoted}; check the name with `ollama list`.",
            status=status,
            server_message=server_message,
        )
    if status == 503:
        return OllamaError(
            f"Ollama is too busy to {action} ({quoted}); wait a moment and try again.",
            status=status,
            server_message=server_message,
        )
    verb = "refused" if 400 <= status < 500 else "failed"
    return OllamaError(
        sentence(f"Ollama {verb} to {action}: {quoted}"),
        status=status,
        server_message=server_message,
    )


def _error_without_message(
    *, status: int, body: bytes, url: str, method: str, path: str, action: str
) -> OllamaError:
    text = body.decode("utf-8", "replace").strip()
    if status in (404, 405):
        # Go's mux answers `404 page not found` / `405 method not allowed` as text/plain: the
        # endpoint itself is missing, so this is not Ollama or not a version that has it.
        return OllamaError(
            f"The server at {url} does not offer {method} {path} "
            f"({readable(text) or f'HTTP {status}'}); "
            "check that the URL points at Ollama and that Ollama is up to date.",
            status=status,
        )
    if status == 403:
        # allowedHostsMiddleware answers 403 with no body when the Host header is not local.
        return OllamaError(
            f"Ollama at {url} refused to {action} (HTTP 403); if Ollama runs on this machine, "
            "use http://127.0.0.1:11434 or http://localhost:11434 as its URL.",
            status=status,
        )
    detail = f": {readable(text)}" if text and not text.startswith("<") else ""
    return OllamaError(
        sentence(
            f"Ollama at {url} answered HTTP {status} when asked to {action}{detail}; "
            "check the Ollama log"
        ),
        status=status,
    )


def stream_error(*, server_message: str, action: str) -> OllamaError:
    """The error for an `{"error": ...}` line inside a 200 stream."""
    quoted = readable(server_message)
    return OllamaError(
        sentence(f"Ollama could not {action}: {quoted}"),
        status=200,
        server_message=server_message,
    )


def unavailable(url: str, *, timed_out: bool, seconds: float | None) -> OllamaUnavailable:
    """The error for a connection that was refused or not accepted in time."""
    if timed_out:
        wait = f" within {seconds:g} s" if seconds is not None else ""
        return OllamaUnavailable(
            f"Ollama did not accept a connection at {url}{wait}; check that it is running "
            "(`ollama serve`, or the Ollama app) and that the URL is right, then try again."
        )
    return OllamaUnavailable(
        f"Ollama is not running at {url}; start it with `ollama serve` (or open the Ollama app) "
        "and try again."
    )


def connection_lost(url: str, action: str) -> OllamaError:
    """The error for a connection that broke after the request was sent."""
    return OllamaError(
        f"The connection to Ollama at {url} was lost before it could {action}; "
        "check that Ollama is still running and try again."
    )


def no_answer(url: str, action: str, seconds: float | None) -> OllamaError:
    """The error for a read timeout: Ollama took longer than `seconds` between two reads."""
    wait = f"{seconds:g} s" if seconds is not None else "the time allowed"
    return OllamaError(
        f"Ollama at {url} did not answer within {wait} when asked to {action}; it may still be "
        "loading the model, so try again or allow a longer wait."
    )


def ended_early(action: str) -> OllamaError:
    """The error for a stream that ended cleanly but without its final line."""
    return OllamaError(
        f"Ollama's answer ended before it finished the request to {action}; "
        "check the Ollama log and try again.",
        status=200,
    )


def unreadable(url: str, action: str, what: str) -> OllamaError:
    """The error for an answer the app cannot parse: most likely not Ollama, or a new shape."""
    return OllamaError(
        f"The server at {url} sent {what} when asked to {action}; check that the URL points "
        "at Ollama."
    )
