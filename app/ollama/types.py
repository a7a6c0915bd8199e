"""The shapes of Ollama's requests and answers (OLLAMA_API.md §2), parsed defensively.

Go leaves out `omitempty` fields when they are zero and writes a nil slice as `null`, so every
field a server may omit has a default and `null` lists read as empty. Unknown fields are ignored:
newer servers add fields all the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Options = dict[str, Any]


def _none_to_empty_tuple(value: object) -> object:
    return () if value is None else value


def _none_to_empty_string(value: object) -> object:
    return "" if value is None else value


def _none_to_empty_dict(value: object) -> object:
    return {} if value is None else value


Strings = Annotated[tuple[str, ...], BeforeValidator(_none_to_empty_tuple)]
Text = Annotated[str, BeforeValidator(_none_to_empty_string)]


class _Wire(BaseModel):
    # `model_info` is a field of Ollama's; pydantic must not take it for one of its own names.
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())


class ModelDetails(_Wire):
    """`details` of a model: its format, architecture family, size and quantisation."""

    parent_model: Text = ""
    format: Text = ""
    family: Text = Field("", description="GGUF general.architecture: llama, qwen2, gemma2, …")
    families: Strings = ()
    parameter_size: Text = Field("", description='Human readable: "3.2B", "120K".')
    quantization_level: Text = Field("", description='"Q4_K_M", "F16", "unknown", …')
    # Only in /api/tags on newer servers.
    context_length: int | None = None
    embedding_length: int | None = None


class ModelSummary(_Wire):
    """One local model in /api/tags."""

    name: str
    model: Text = ""
    modified_at: datetime
    size: int = 0
    digest: Text = Field("", description="Manifest digest, hex without `sha256:`.")
    details: ModelDetails = Field(default_factory=ModelDetails)
    capabilities: Strings = ()


class ModelInfo(_Wire):
    """What /api/show says about a model."""

    license: Text = ""
    modelfile: Text = ""
    parameters: Text = Field("", description="One `key  value` per line; see parameter_values.")
    template: Text = ""
    system: Text = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: Annotated[dict[str, Any], BeforeValidator(_none_to_empty_dict)] = Field(
        default_factory=dict, description="The GGUF metadata: general.*, <arch>.*, tokenizer.*."
    )
    capabilities: Strings = ()
    modified_at: datetime | None = None

    @property
    def architecture(self) -> str:
        """The GGUF architecture (`llama`, `qwen2`, …); "" when the server does not say."""
        value = self.model_info.get("general.architecture")
        return value if isinstance(value, str) and value else self.details.family

    @property
    def context_length(self) -> int | None:
        """The context the model was trained with."""
        return self._architecture_int("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self._architecture_int("embedding_length")

    @property
    def block_count(self) -> int | None:
        return self._architecture_int("block_count")

    @property
    def head_count(self) -> int | None:
        """Attention heads; None also when the model gives a count per layer (a list)."""
        return self._architecture_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        return self._architecture_int("attention.head_count_kv")

    @property
    def has_adapter(self) -> bool:
        """Whether the model carries a LoRA adapter (`ADAPTER <blob path>` in its modelfile)."""
        return any(line.startswith("ADAPTER ") for line in self.modelfile.splitlines())

    def parameter_values(self) -> dict[str, list[str]]:
        """The `parameters` text as key → values, in order; `stop` is the key that repeats.

        The server writes each value with Go's `%#v`, so strings come quoted (`"USER:"`) and are
        unquoted here; numbers and booleans stay as written (`0.2`, `true`).
        """
        values: dict[str, list[str]] = {}
        for line in self.parameters.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                values.setdefault(key, []).append(_go_unquote(value.strip()))
        return values

    def _architecture_int(self, key: str) -> int | None:
        if not self.architecture:
            return None
        value = self.model_info.get(f"{self.architecture}.{key}")
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None


_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_GO_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def _go_unquote(value: str) -> str:
    """The string inside a Go `strconv.Quote` literal; anything else is returned as it is."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape[0] in "xuU" and len(escape) > 1:
            return chr(int(escape[1:], 16))
        return _GO_SIMPLE_ESCAPES.get(escape, escape)

    return _GO_ESCAPE.sub(replace, value[1:-1])


class RunningModel(_Wire):
    """One loaded model in /api/ps."""

    name: str
    model: Text = ""
    size: int = Field(0, description="Bytes in memory.")
    size_vram: int = Field(0, description="Bytes of that in GPU memory; 0 on CPU.")
    digest: Text = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    expires_at: datetime | None = None
    context_length: int | None = Field(None, description="The allocated context (v0.10.0+).")


class _Progress(_Wire):
    status: Text = ""
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class PullProgress(_Progress):
    """One line of /api/pull: a status, and for a layer its digest and byte counts."""


class StatusLine(_Progress):
    """One line of /api/create: free text to show, not to parse (quantising adds byte counts)."""


class PullTotals:
    """The progress of a whole pull: Ollama pulls layers in parallel, each on its own lines."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[int, int]] = {}

    def add(self, progress: PullProgress) -> None:
        """Take in one line; lines without a layer digest (`pulling manifest`, …) change nothing."""
        if not progress.digest:
            return
        total, completed = self._layers.get(progress.digest, (0, 0))
        self._layers[progress.digest] = (
            progress.total if progress.total is not None else total,
            progress.completed if progress.completed is not None else completed,
        )

    @property
    def completed(self) -> int:
        """Bytes done over the layers seen so far."""
        return sum(completed for _, completed in self._layers.values())

    @property
    def total(self) -> int:
        """Bytes in the layers seen so far; it grows as the pull reaches more layers."""
        return sum(total for total, _ in self._layers.values())

    @property
    def fraction(self) -> float | None:
        """completed / total between 0 and 1, or None before any layer reported its size."""
        total = self.total
        return min(1.0, self.completed / total) if total > 0 else None


_STATS_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


class Stats(_Wire):
    """The metrics on a final generate or chat line; durations are in nanoseconds.

    They are `omitempty`, so each may be missing (None) when it was zero.
    """

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens per second, or None when the counts are missing or zero."""
        if not self.eval_count or not self.eval_duration:
            return None
        return self.eval_count / self.eval_duration * 1e9


def _stats(line: dict[str, Any]) -> Stats | None:
    if not line.get("done"):
        return None
    return Stats.model_validate({key: line.get(key) for key in _STATS_FIELDS})


class GenerateChunk(_Wire):
    """One line of /api/generate; the last has `done`, `done_reason` and the stats."""

    model: Text = ""
    text: Text = Field("", description="The line's `response`: a piece of the output.")
    thinking: Text = ""
    done: bool = False
    done_reason: str | None = Field(None, description="stop, length, load or unload.")
    stats: Stats | None = None
    context: tuple[int, ...] | None = None

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> Self:
        return cls.model_validate(
            {
                "model": line.get("model"),
                "text": line.get("response"),
                "thinking": line.get("thinking"),
                "done": line.get("done", False),
                "done_reason": line.get("done_reason"),
                "stats": _stats(line),
                "context": line.get("context"),
            }
        )


class ChatChunk(_Wire):
    """One line of /api/chat; `text` is the message's `content`."""

    model: Text = ""
    text: Text = ""
    thinking: Text = ""
    done: bool = False
    done_reason: str | None = None
    stats: Stats | None = None

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> Self:
        message = line.get("message")
        if not isinstance(message, dict):
            message = {}
        return cls.model_validate(
            {
                "model": line.get("model"),
                "text": message.get("content"),
                "thinking": message.get("thinking"),
                "done": line.get("done", False),
                "done_reason": line.get("done_reason"),
                "stats": _stats(line),
            }
        )


@dataclass(frozen=True)
class ChatMessage:
    """A message of a chat: role `system`, `user`, `assistant` or `tool`."""

    role: str
    content: str

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class CreateRequest:
    """The body of /api/create in its v0.5.5+ form; `files`/`adapters` map file names to digests.

    `from_` names an existing model (not a path); when it is not local, Ollama tries to pull it.
    """

    model: str
    from_: str | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    license: str | None = None
    quantize: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body, without the fields left at None and without `stream`."""
        body: dict[str, Any] = {
            "model": self.model,
            "from": self.from_,
            "files": self.files,
            "adapters": self.adapters,
            "template": self.template,
            "system": self.system,
            "parameters": self.parameters,
            "license": self.license,
            "quantize": self.quantize,
        }
        return {key: value for key, value in body.items() if value is not None}


def full_name(name: str) -> str:
    """A model name with its tag: Ollama lists `llama3.2` as `llama3.2:latest`."""
    name = name.strip()
    return name if name.rfind(":") > name.rfind("/") else f"{name}:latest"


def same_model(a: str, b: str) -> bool:
    """Whether two names are one model to Ollama (the tag defaults to latest; case is ignored)."""
    return full_name(a).casefold() == full_name(b).casefold()
