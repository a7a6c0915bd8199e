"""The async client of Ollama's HTTP API, on httpx (OLLAMA_API.md is the protocol it follows).

Every failure comes out as an OllamaError with one sentence for the user; an httpx exception never
escapes. The streaming calls (pull, create, generate, chat) are async generators: close one early
(`aclose()`, `contextlib.aclosing`, or cancel the task consuming it) and the response is closed,
which the server sees as the request being cancelled. A stream stops after its final line
(`done: true`, or `status: success`), and one that ends without it raises OllamaError.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ValidationError

from app import APP_ID, __version__
from app.errors import BadInputError
from app.ollama import errors, versions
from app.ollama.errors import OllamaBadURL, OllamaError
from app.ollama.types import (
    ChatChunk,
    ChatMessage,
    CreateRequest,
    GenerateChunk,
    ModelInfo,
    ModelSummary,
    PullProgress,
    RunningModel,
    StatusLine,
)
from app.transport import Failure, classify

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:11434"
# The official Go client's limit on one NDJSON line (maxBufferSize).
MAX_LINE_BYTES = 8 * 1024 * 1024
# Blobs are hashed and uploaded in pieces this big: constant memory for any file size.
CHUNK_BYTES = 1024 * 1024

_DIGEST = re.compile(r"^(?:sha256[:-])?([0-9a-fA-F]{64})$")
_Model = TypeVar("_Model", bound=BaseModel)
Progress = Callable[[int, int], None]


class OllamaClient:
    """One Ollama server; use it as `async with OllamaClient(url) as client:` or call aclose()."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float | None = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        self.base_url = normalise_url(base_url)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            # Connecting is instant when Ollama runs; loading a model before the first byte can
            # take minutes (OLLAMA_LOAD_TIMEOUT is 5 min), and so can hashing an uploaded blob.
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            transport=transport,
            headers={"User-Agent": f"{APP_ID}/{__version__}"},
            # A proxy from the environment must not carry requests meant for this machine.
            trust_env=not _is_loopback(urlsplit(self.base_url).hostname or ""),
            # Plain http (Ollama's default) needs no certificates: loading the CA bundle holds
            # the GIL for tens of milliseconds per client, which the window would feel.
            verify=self.base_url.startswith("https://"),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plain requests ----------------------------------------------------------------------

    async def version(self) -> str:
        """The server's version string: `0.6.8`, `0.33.0-rc2`, or `0.0.0` for a dev build."""
        action = "report its version"
        data = await self._json("GET", "/api/version", action)
        version = data.get("version")
        if not isinstance(version, str):
            raise errors.unreadable(self.base_url, action, "no version")
        return version

    async def check(self) -> str:
        """The version, after making sure the app can work with it (OllamaTooOld if not)."""
        version = await self.version()
        versions.check_supported(version, self.base_url)
        return version

    async def tags(self) -> list[ModelSummary]:
        """The local models, newest first."""
        action = "list its models"
        data = await self._json("GET", "/api/tags", action)
        return [self._parse(ModelSummary, item, action) for item in _items(data)]

    async def show(self, model: str, *, verbose: bool = False) -> ModelInfo:
        """The details of a model; OllamaNotFound when there is none by that name."""
        action = f'show "{model}"'
        body: dict[str, Any] = {"model": model}
        if verbose:
            body["verbose"] = True
        return self._parse(ModelInfo, await self._json("POST", "/api/show", action, body), action)

    async def ps(self) -> list[RunningModel]:
        """The models loaded in memory now."""
        action = "list the running models"
        data = await self._json("GET", "/api/ps", action)
        return [self._parse(RunningModel, item, action) for item in _items(data)]

    async def delete(self, model: str) -> None:
        """Delete a model (and the layers no other model uses)."""
        # DELETE with a JSON body: httpx's delete() cannot send one.
        await self._request("DELETE", "/api/delete", f'delete "{model}"', json={"model": model})

    async def copy(self, source: str, destination: str) -> None:
        """Copy a model under a new name (rename = copy, then delete)."""
        body = {"source": source, "destination": destination}
        await self._request("POST", "/api/copy", f'copy "{source}" to "{destination}"', json=body)

    # -- blobs -------------------------------------------------------------------------------

    async def blob_exists(self, digest: str) -> bool:
        """Whether this server holds the blob (it never asks ollama.com)."""
        import httpx

        digest = normalise_digest(digest)
        action = f"look up blob {_short(digest)}"
        try:
            response = await self._client.head(f"/api/blobs/{digest}")
        except httpx.RequestError as error:
            raise self._transport_error(error, action) from error
        if response.status_code == 404:
            return False
        self._raise_for_status(response, action)
        return True

    async def push_blob(
        self,
        path: Path,
        *,
        digest: str | None = None,
        on_progress: Progress | None = None,
    ) -> str:
        """Upload a file as a blob unless the server has it already; returns `sha256:<hex>`.

        The digest is computed in a worker thread when not given, and the file is streamed in
        CHUNK_BYTES pieces, so neither blocks the event loop nor holds the file in memory.
        `on_progress(sent, total)` follows the upload; an upload skipped reports (total, total).
        """
        path = Path(path)
        size = await asyncio.to_thread(_file_size, path)
        digest = (
            normalise_digest(digest) if digest else await asyncio.to_thread(sha256_digest, path)
        )
        if await self.blob_exists(digest):
            if on_progress is not None:
                on_progress(size, size)
            return digest
        try:
            file = path.open("rb")
        except OSError as error:
            raise _unreadable_file(path, error) from error
        with file:
            await self._request(
                "POST",
                f"/api/blobs/{digest}",
                f"upload {path.name}",
                content=_FileBody(file, path, size, on_progress),
                headers={"Content-Length": str(size)},
            )
        return digest

    async def push_blobs(
        self, files: Mapping[str, Path], *, on_progress: Progress | None = None
    ) -> dict[str, str]:
        """Upload each file, one after the other; returns name → digest for create's maps.

        `on_progress(sent, total)` counts the bytes of all the files together.
        """
        sizes = {name: await asyncio.to_thread(_file_size, path) for name, path in files.items()}
        total = sum(sizes.values())
        done = 0
        digests: dict[str, str] = {}
        for name, path in files.items():
            progress = None if on_progress is None else _shifted(on_progress, done, total)
            digests[name] = await self.push_blob(path, on_progress=progress)
            done += sizes[name]
        return digests

    # -- streams -----------------------------------------------------------------------------

    async def pull(self, model: str) -> AsyncGenerator[PullProgress, None]:
        """Pull a model from the registry; feed the lines to a PullTotals for one progress bar."""
        action = f'pull "{model}"'
        body = {"model": model, "stream": True}
        async with aclosing(self._post_stream("/api/pull", body, action, _succeeded)) as lines:
            async for line in lines:
                yield self._parse(PullProgress, line, action)

    async def create(self, request: CreateRequest) -> AsyncGenerator[StatusLine, None]:
        """Create a model from blobs pushed before; the lines are free text to show."""
        action = f'create "{request.model}"'
        body = {**request.to_json(), "stream": True}
        async with aclosing(self._post_stream("/api/create", body, action, _succeeded)) as lines:
            async for line in lines:
                yield self._parse(StatusLine, line, action)

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        keep_alive: str | float | None = None,
        truncate: bool | None = None,
        raw: bool = False,
        think: bool | None = None,
    ) -> AsyncGenerator[GenerateChunk, None]:
        """Complete `prompt`; the last chunk has `done`, `done_reason` and the stats.

        An empty prompt only loads the model. `truncate=False` makes a prompt longer than the
        context an error instead of being cut silently. `think=None` leaves the server's default,
        which is on for thinking models.
        """
        action = f'generate with "{model}"'
        body = _without_none(
            {
                "model": model,
                "prompt": prompt,
                "stream": True,
                "system": system,
                "options": options,
                "keep_alive": keep_alive,
                "truncate": truncate,
                "raw": True if raw else None,
                "think": think,
            }
        )
        async with aclosing(self._post_stream("/api/generate", body, action, _done)) as lines:
            async for line in lines:
                yield self._parse_line(GenerateChunk.from_line, line, action)

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: dict[str, Any] | None = None,
        keep_alive: str | float | None = None,
        truncate: bool | None = None,
        think: bool | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Answer a conversation; the last chunk has `done`, `done_reason` and the stats."""
        action = f'chat with "{model}"'
        body = _without_none(
            {
                "model": model,
                "messages": [message.to_json() for message in messages],
                "stream": True,
                "options": options,
                "keep_alive": keep_alive,
                "truncate": truncate,
                "think": think,
            }
        )
        async with aclosing(self._post_stream("/api/chat", body, action, _done)) as lines:
            async for line in lines:
                yield self._parse_line(ChatChunk.from_line, line, action)

    async def generate_text(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        keep_alive: str | float | None = None,
        truncate: bool | None = None,
        raw: bool = False,
        think: bool | None = None,
    ) -> tuple[str, GenerateChunk]:
        """The whole completion of `prompt`, and the final chunk (done_reason, stats)."""
        pieces: list[str] = []
        final: GenerateChunk | None = None
        stream = self.generate(
            model,
            prompt,
            system=system,
            options=options,
            keep_alive=keep_alive,
            truncate=truncate,
            raw=raw,
            think=think,
        )
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                pieces.append(chunk.text)
                final = chunk
        # The stream raises when it ends without its final chunk, so there is one here.
        assert final is not None and final.done
        return "".join(pieces), final

    async def chat_text(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: dict[str, Any] | None = None,
        truncate: bool | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[str, ChatChunk]:
        """The whole answer to `messages` and the final chunk (done_reason, stats); each piece
        of text also goes to `on_text` as it is parsed, for a view that streams it."""
        pieces: list[str] = []
        final: ChatChunk | None = None
        stream = self.chat(model, messages, options=options, truncate=truncate)
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    pieces.append(chunk.text)
                    if on_text is not None:
                        on_text(chunk.text)
                final = chunk
        assert final is not None and final.done  # as in generate_text
        return "".join(pieces), final

    # -- plumbing ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        json: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request, read the whole answer, and raise OllamaError unless it is 2xx."""
        import httpx

        try:
            response = await self._client.request(
                method, path, json=json, content=content, headers=headers
            )
        except httpx.RequestError as error:
            raise self._transport_error(error, action) from error
        self._raise_for_status(response, action)
        return response

    async def _json(self, method: str, path: str, action: str, body: Any = None) -> dict[str, Any]:
        response = await self._request(method, path, action, json=body)
        return self._object(response.content, action)

    async def _post_stream(
        self,
        path: str,
        body: dict[str, Any],
        action: str,
        is_final: Callable[[dict[str, Any]], bool],
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON objects of an NDJSON stream, up to and including the final one.

        The status is checked before the first line (errors before the stream are non-2xx JSON),
        and every line is checked for `error` (errors after it arrive with status 200). The
        response is closed before the final line is handed on, and whenever the generator is.
        """
        import httpx

        final: dict[str, Any] | None = None
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if not response.is_success:
                    await response.aread()
                    self._raise_for_status(response, action)
                chunks = response.aiter_bytes()
                splitter = _LineSplitter(
                    MAX_LINE_BYTES, errors.unreadable(self.base_url, action, "a line over 8 MB")
                )
                try:
                    at_end = False
                    while final is None and not at_end:
                        chunk = await anext(chunks, None)
                        at_end = chunk is None
                        # Go ends every line with \n; at the end, a last line without one counts.
                        for raw_line in splitter.feed(b"\n" if chunk is None else chunk):
                            line = self._stream_line(raw_line, action)
                            if is_final(line):
                                final = line
                                break
                            yield line
                finally:
                    await _aclose(chunks)
        except httpx.RequestError as error:
            raise self._transport_error(error, action) from error
        if final is None:
            raise errors.ended_early(action)
        yield final

    def _stream_line(self, raw_line: bytes, action: str) -> dict[str, Any]:
        line = self._object(raw_line, action)
        message = line.get("error")
        if message is not None:
            text = message if isinstance(message, str) else orjson.dumps(message).decode()
            raise errors.stream_error(server_message=text, action=action)
        return line

    def _object(self, content: bytes, action: str) -> dict[str, Any]:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise errors.unreadable(self.base_url, action, "an answer that is not a JSON object")
        return data

    def _parse(self, model: type[_Model], data: Any, action: str) -> _Model:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise errors.unreadable(
                self.base_url, action, f"an answer this app cannot read ({_problem(error)})"
            ) from error

    def _parse_line(
        self, parse: Callable[[dict[str, Any]], _Model], line: dict[str, Any], action: str
    ) -> _Model:
        try:
            return parse(line)
        except ValidationError as error:
            raise errors.unreadable(
                self.base_url, action, f"a line this app cannot read ({_problem(error)})"
            ) from error

    def _raise_for_status(self, response: httpx.Response, action: str) -> None:
        if response.is_success:
            return
        raise errors.status_error(
            status=response.status_code,
            body=response.content,
            url=self.base_url,
            method=response.request.method,
            path=response.request.url.path,
            action=action,
        )

    def _transport_error(self, error: httpx.RequestError, action: str) -> OllamaError:
        failure = classify(error)
        if failure is Failure.CONNECT_TIMEOUT:
            return errors.unavailable(self.base_url, timed_out=True, seconds=self._connect_timeout)
        if failure is Failure.HOST_UNKNOWN:
            host = urlsplit(self.base_url).hostname
            return errors.OllamaUnavailable(
                f"The host {host} in the Ollama URL {self.base_url} cannot be found; "
                "check the URL in the settings."
            )
        if failure is Failure.REFUSED:
            return errors.unavailable(self.base_url, timed_out=False, seconds=None)
        if failure is Failure.READ_TIMEOUT:
            return errors.no_answer(self.base_url, action, self._read_timeout)
        if failure is Failure.LOST:
            return errors.connection_lost(self.base_url, action)
        if failure is Failure.TIMEOUT:
            return OllamaError(
                f"Ollama at {self.base_url} did not take the request in time when asked to "
                f"{action}; try again."
            )
        return OllamaError(
            f"Talking to Ollama at {self.base_url} failed when asked to {action} "
            f"({type(error).__name__}: {error}); try again."
        )


# -- helpers ---------------------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """`http(s)://host[:port]` without a trailing slash; a bare `host:port` gets `http://`.

    Raises OllamaBadURL (a BadInputError) for anything else: paths, queries and other schemes.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    problem = ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (parsing the port is what rejects "host:abc" or "host:99999")
    except ValueError:
        problem = "it has no valid port"
    else:
        if parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it must have nothing after the port"
        elif parts.username is not None or parts.password is not None:
            problem = "it must not carry a user name or password"
    if problem:
        raise OllamaBadURL(f'"{url}" is not an Ollama URL ({problem}); use one like {DEFAULT_URL}.')
    return f"{parts.scheme}://{parts.netloc}"


def normalise_digest(digest: str) -> str:
    """`sha256:<lowercase hex>`: the only form Ollama's blob upload accepts (OLLAMA_API.md §2.5)."""
    match = _DIGEST.match(digest.strip())
    if match is None:
        raise BadInputError(f'"{digest}" is not a sha256 digest; expected sha256:<64 hex digits>.')
    return "sha256:" + match.group(1).lower()


def sha256_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, read CHUNK_BYTES at a time (blocking: call it in a thread)."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                hasher.update(chunk)
    except OSError as error:
        raise _unreadable_file(path, error) from error
    return "sha256:" + hasher.hexdigest()


class _FileBody:
    """An upload body that reads the file a chunk at a time in a worker thread.

    An iterator object rather than an async generator, so that an upload that fails half-way
    leaves no suspended generator behind (the caller closes the file).
    """

    def __init__(self, file: IO[bytes], path: Path, size: int, on_progress: Progress | None):
        self._file = file
        self._path = path
        self._size = size
        self._sent = 0
        self._on_progress = on_progress

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        remaining = self._size - self._sent
        if remaining <= 0:
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._file.read, min(CHUNK_BYTES, remaining))
        if not chunk:
            # Content-Length is already sent; a shorter body would break the request anyway.
            raise BadInputError(f"{self._path} got shorter while it was being uploaded; try again.")
        self._sent += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self._sent, self._size)
        return chunk


class _LineSplitter:
    """Cuts a byte stream at `\\n` only, and raises `too_long` for a line over `limit` bytes.

    httpx's aiter_lines() would also cut at `\\r`, U+0085, U+2028 and other line breaks that Go's
    JSON encoder leaves unescaped inside strings, so a generated token could split a line.
    """

    def __init__(self, limit: int, too_long: Exception) -> None:
        self._limit = limit
        self._too_long = too_long
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete, non-blank lines that `chunk` finishes."""
        self._buffer += chunk
        lines: list[bytes] = []
        if b"\n" in chunk:
            *complete, rest = self._buffer.split(b"\n")
            self._buffer = bytearray(rest)
            lines = [bytes(line) for line in complete if line.strip()]
        if len(self._buffer) > self._limit or any(len(line) > self._limit for line in lines):
            raise self._too_long
        return lines


def _shifted(report: Progress, before: int, total: int) -> Progress:
    """A progress callback for one file that reports the bytes of all files, `total` in all."""

    def progress(sent: int, _size: int) -> None:
        report(before + sent, total)

    return progress


def _succeeded(line: dict[str, Any]) -> bool:
    return line.get("status") == "success"


def _done(line: dict[str, Any]) -> bool:
    return line.get("done") is True


def _items(data: dict[str, Any]) -> list[Any]:
    models = data.get("models")
    return models if isinstance(models, list) else []


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def _problem(error: ValidationError) -> str:
    item = error.errors()[0]
    where = ".".join(str(part) for part in item["loc"])
    return f"{where}: {item['msg']}" if where else str(item["msg"])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise _unreadable_file(path, error) from error


def _unreadable_file(path: Path, error: OSError) -> BadInputError:
    reason = error.strerror or type(error).__name__
    return BadInputError(f"{path} cannot be read ({reason}); check that the file is there.")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _aclose(iterator: object) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
