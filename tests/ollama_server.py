"""A protocol-faithful stand-in for the Ollama HTTP API, for the test suite.

Ollama cannot run here, so this module serves the parts of its API the app uses, to the field:
status codes, content types, NDJSON framing and the exact error strings of a real server, as
recorded in ``../shared/OLLAMA_API.md`` (the § numbers below point into that file).
Standard library only: a ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port), HTTP/1.1,
chunked NDJSON streams, daemon threads.

Use the ``ollama_server`` fixture (bottom of this file; conftest imports it): a started
:class:`OllamaStandIn` holding ``smollm2:135m`` (llama, F16, SmolLM2-135M dimensions, its
ChatML template, system prompt and stop parameters), stopped and deleted after the test.

    def test_something(ollama_server):
        client = MyOllamaClient(ollama_server.url)
        ollama_server.set_reply("smollm2:135m", "Paris.")
        ollama_server.fail_during_stream("/api/chat", "model runner crashed", after_lines=2)
        ...
        assert ollama_server.model("my-model:latest").adapters
        assert ollama_server.requests[-1].json["model"] == "smollm2:135m"

What it keeps: a model store (manifests of layers whose blobs really exist on disk, with real
sha256 digests), uploaded blobs, a "registry" for ``/api/pull`` (:meth:`add_registry_model`), and
the models generate/chat loaded (``/api/ps``). What it fakes is the weights: generation answers a
deterministic reply derived from the model's digest, the prompt and the seed (or what
:meth:`OllamaStandIn.set_reply` says), streamed one "token" (a word with its following
whitespace) per line. Prompt tokens are counted as the whitespace-separated words of the system
prompt, the prompt or messages, and the literal text of the template.

Faults (each applies to the next request to that path only, e.g. ``"/api/chat"``; ``"/api/blobs"``
matches every blob path; several can be set on one path and then all apply to that request):

* ``fail_before_stream(path, status, message)``: HTTP ``status`` with ``{"error": message}``;
* ``fail_during_stream(path, message, after_lines=1)``: 200 NDJSON, ``after_lines`` normal lines
  (never the final ``done``/``success`` line), then ``{"error": message}``; nothing is stored.
  With ``"stream": false`` the request gets ``500 {"error": message}`` instead;
* ``slow_first_byte(path, seconds)``: nothing is sent for ``seconds`` (for generate/chat it
  counts as load time); a client that gives up meanwhile is handled quietly;
* ``drop_connection(path, after_lines=1)``: ``after_lines`` lines (half the body of a plain
  response; nothing at all for an empty one), then the socket is shut without finishing the body.

Deliberate deviations from a real server, each marked ``DEVIATION`` where it happens:

* a safetensors LoRA adapter whose tensor shapes do not fit the base (wrong ``embedding_length``,
  a layer index beyond ``block_count``, mismatched ranks) is refused at create time, mid-stream;
  a real server accepts it and fails only when the model loads;
* file maps that mix ``.gguf`` and ``.safetensors`` keys get ``400 mixed model file types`` (the
  message of newer servers); the snapshot behind OLLAMA_API.md picks one type by Go map order;
* relative paths and digest formats of ``files``/``adapters`` are checked before anything is
  streamed, for GGUF imports too;
* pre-0.5.5 (``modelfile``) creates stream the current status lines, not the old ones;
* ``/api/push`` and ``/api/embed(dings)`` answer ``501`` (the app does not use them).
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import fnmatch
import hashlib
import io
import ipaddress
import json
import os
import re
import select
import shutil
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "SMOLLM2_TEMPLATE",
    "Layer",
    "OllamaStandIn",
    "RecordedRequest",
    "StoredModel",
    "ollama_server",
]

# ---------------------------------------------------------------------------------------------
# Public data
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server received it. Header names are lower-cased.

    ``json`` is the parsed body (None when there was none or it did not parse). Blob uploads keep
    no body, only ``body_size``.
    """

    method: str
    path: str
    json: Any | None
    headers: dict[str, str]
    body_size: int = 0


@dataclass
class Layer:
    """One manifest layer. ``size`` is the size the server reports, not the blob file's size."""

    media_type: str
    digest: str  # "sha256:<64 lowercase hex>"
    size: int


@dataclass
class StoredModel:
    """A model in the stand-in's store (what its manifest and config describe).

    ``digest`` is the manifest digest as ``/api/tags`` shows it (hex, no ``sha256:`` prefix);
    ``adapters`` are the digests (``sha256:…``) of the adapter layers; ``files`` is the file map the
    model was imported from (``{}`` for ``add_model``; derived models keep their base's).
    """

    name: str
    digest: str = ""
    family: str = "llama"
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    parent_model: str = ""
    quantization_level: str = "Q8_0"
    model_info: dict[str, Any] = field(default_factory=dict)
    format: str = "gguf"
    parameter_size: str = ""
    size: int = 0
    modified_at_ns: int = 0
    layers: list[Layer] = field(default_factory=list)
    config_digest: str = ""
    tensors: list[dict[str, Any]] = field(default_factory=list)
    adapter_files: dict[str, str] = field(default_factory=dict)

    @property
    def license(self) -> str:
        """All LICENSE layers joined with a newline, as ``/api/show`` reports them."""
        return "\n".join(self.licenses)

    def info(self, key: str, default: Any = None) -> Any:
        """``model_info["<family>.<key>"]``, e.g. ``info("embedding_length")``."""
        return self.model_info.get(f"{self.family}.{key}", default)


# The template of the real smollm2:135m in the Ollama library (ChatML).
SMOLLM2_TEMPLATE = (
    "{{- if .Messages }}\n"
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
    "<|im_start|>{{ .Role }}\n"
    "{{ .Content }}{{ if not $last }}<|im_end|>\n"
    "{{ end }}\n"
    '{{- if and (ne .Role "assistant") $last }}<|im_end|>\n'
    "<|im_start|>assistant\n"
    "{{ end }}\n"
    "{{- end }}\n"
    "{{- else }}\n"
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
    "{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"
)

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

_DEFAULT_HOST = "registry.ollama.ai"
_DEFAULT_NAMESPACE = "library"
_DEFAULT_TAG = "latest"

_MT_MODEL = "application/vnd.ollama.image.model"
_MT_ADAPTER = "application/vnd.ollama.image.adapter"
_MT_TEMPLATE = "application/vnd.ollama.image.template"
_MT_SYSTEM = "application/vnd.ollama.image.system"
_MT_PARAMS = "application/vnd.ollama.image.params"
_MT_LICENSE = "application/vnd.ollama.image.license"
_MT_MESSAGES = "application/vnd.ollama.image.messages"
_MT_DATA = "application/vnd.ollama.image.data"
_MT_CONFIG = "application/vnd.docker.container.image.v1+json"
_MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

_CT_JSON = "application/json; charset=utf-8"  # gin's c.JSON
_CT_JSON_BARE = "application/json"  # errors of streamed handlers (streamResponse/waitForStream)
_CT_NDJSON = "application/x-ndjson"
_CT_TEXT = "text/plain; charset=utf-8"
_CT_TEXT_BARE = "text/plain"  # gin's own 404/405 pages

_DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")

_FILE_TYPES = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "BF16": 32,
}
_FILE_TYPE_NAMES = {v: k for k, v in _FILE_TYPES.items()}
# Bits per weight, to report a plausible size after quantizing.
_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q4_K_M": 4.85, "Q4_K_S": 4.58}
_QUANTIZE_TYPES = ("F32", "F16", "Q4_K_S", "Q4_K_M", "Q8_0")

_GGML_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    30: "BF16",
}

# config.json `architectures[0]` -> GGUF architecture (convert/convert.go, LoadModelMetadata).
_HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "MllamaForConditionalGeneration": "mllama",
    "Llama4ForConditionalGeneration": "llama4",
    "Mistral3ForConditionalGeneration": "mistral3",
    "Ministral3ForCausalLM": "mistral3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Gemma3TextModel": "gemma3",
    "Gemma3nForConditionalGeneration": "gemma3n",
    "Phi3ForCausalLM": "phi3",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2_5_VLForConditionalGeneration": "qwen25vl",
    "Qwen3VLForConditionalGeneration": "qwen3vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3vlmoe",
    "Olmo3ForCausalLM": "olmo3",
    "BertModel": "bert",
    "NomicBertModel": "nomic-bert",
    "NomicBertMoEModel": "nomic-bert-moe",
    "CohereForCausalLM": "command-r",
    "GptOssForCausalLM": "gptoss",
    "DeepseekV3ForCausalLM": "deepseek2",
    "Glm4MoeLiteForCausalLM": "glm4moelite",
    "Lfm2ForCausalLM": "lfm2",
}
# Safetensors LoRA conversion exists only for these base architectures (convert.ConvertAdapter).
_ADAPTER_ARCHITECTURES = ("llama", "gemma2")

# fmt: off
_WORDS = (
    "the", "sky", "is", "blue", "because", "light", "scatters", "in", "air", "and", "small",
    "models", "learn", "quickly", "from", "data", "a", "river", "runs", "through", "the", "green",
    "valley", "under", "bright", "stars", "every", "answer", "comes", "with", "care", "our",
    "tiny", "llama", "thinks", "about", "questions", "gently", "while", "clouds", "drift", "over",
    "quiet", "hills", "at", "morning", "sun", "rises", "slowly", "warm", "wind", "carries",
    "soft", "songs", "across", "open", "fields", "where", "old", "trees", "whisper", "stories",
    "of", "time", "that", "flows", "like", "water",
)
# fmt: on

_MAX_INT64 = (1 << 63) - 1
_FOREVER = -1  # keep_alive meaning "never unload"

# ---------------------------------------------------------------------------------------------
# Small helpers: time, Go-style formatting, JSON output
# ---------------------------------------------------------------------------------------------


def _rfc3339(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def _go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode()


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """strconv.Quote (what Go's %q prints for a string)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not char.isprintable():
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _go_quote_byte(byte: int) -> str:
    """quoteChar from encoding/json's scanner: one byte shown the way Go's errors show it."""
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    return "'" + _go_quote(chr(byte))[1:-1] + "'"


def _go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64): what %v and %#v print for a float64."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digits_t, exp = decimal.Decimal(repr(value)).as_tuple()
    digits = list(digits_t)
    assert isinstance(exp, int)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    text = "".join(map(str, digits))
    point = len(digits) + exp
    x = point - 1
    prefix = "-" if sign else ""
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def _go_value(value: Any, *, sharp: bool) -> str:
    """fmt's %v (sharp=False) or %#v (sharp=True) for a value decoded from JSON by Go."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_float(float(value))
    if isinstance(value, str):
        return _go_quote(value) if sharp else value
    if value is None:
        return "<nil>"
    return json.dumps(value)


def _human_number(count: int) -> str:
    """format.HumanNumber: the parameter_size Ollama reports."""
    if count >= 1_000_000_000:
        number = count / 1_000_000_000
        return f"{number:.0f}B" if number.is_integer() else f"{number:.1f}B"
    if count >= 1_000_000:
        number = count / 1_000_000
        return f"{number:.0f}M" if number.is_integer() else f"{number:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.0f}K"
    return str(count)


def _parse_human_number(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBT]?)\s*", text, re.IGNORECASE)
    if not match:
        return 0
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def _version_tuple(version: str) -> tuple[int, int, int]:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    if not match:
        return (999, 0, 0)
    parts = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
    return (999, 0, 0) if parts == (0, 0, 0) else parts  # 0.0.0 is a development build


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _words(text: str) -> list[str]:
    return text.split()


def _template_literal(template: str) -> str:
    """The text of a Go template outside its actions (what a prompt adds besides the data)."""
    return re.sub(r"\{\{.*?\}\}", " ", template, flags=re.DOTALL)


# ---------------------------------------------------------------------------------------------
# JSON input the way Go's encoding/json reads it (error messages included)
# ---------------------------------------------------------------------------------------------


class _GoJSONError(Exception):
    pass


class _FloatLit(float):
    """A JSON number written with a fraction or exponent; keeps its literal for Go's messages."""

    literal: str

    def __new__(cls, text: str) -> _FloatLit:
        obj = super().__new__(cls, text)
        obj.literal = text
        return obj


class _GoJSONScanner:
    """Validates one JSON value with the messages of Go's encoding/json scanner."""

    _WS = b" \t\r\n"

    def __init__(self, data: bytes, *, decoder: bool) -> None:
        self.data = data
        self.decoder = decoder  # json.Decoder (gin) vs json.Unmarshal

    def eof(self) -> _GoJSONError:
        return _GoJSONError("unexpected EOF" if self.decoder else "unexpected end of JSON input")

    def bad(self, pos: int, context: str) -> _GoJSONError:
        return _GoJSONError(f"invalid character {_go_quote_byte(self.data[pos])} {context}")

    def ws(self, pos: int) -> int:
        while pos < len(self.data) and self.data[pos] in self._WS:
            pos += 1
        return pos

    def scan(self) -> tuple[int, int] | None:
        """(start, end) of the first value; None when the input is only whitespace (io.EOF)."""
        start = self.ws(0)
        if start >= len(self.data):
            if self.decoder:
                return None
            raise self.eof()
        end = self.value(start)
        if not self.decoder:
            rest = self.ws(end)
            if rest < len(self.data):
                raise self.bad(rest, "after top-level value")
        return start, end

    def value(self, pos: int) -> int:
        data = self.data
        if pos >= len(data):
            raise self.eof()
        char = data[pos]
        if char == ord("{"):
            return self.obj(pos + 1)
        if char == ord("["):
            return self.array(pos + 1)
        if char == ord('"'):
            return self.string(pos + 1)
        if char == ord("-") or ord("0") <= char <= ord("9"):
            return self.number(pos)
        for word in (b"true", b"false", b"null"):
            if char == word[0]:
                return self.literal(pos, word)
        raise self.bad(pos, "looking for beginning of value")

    def obj(self, pos: int) -> int:
        pos = self.ws(pos)
        if pos >= len(self.data):
            raise self.eof()
        if self.data[pos] == ord("}"):
            return pos + 1
        while True:
            if pos >= len(self.data):
                raise self.eof()
            if self.data[pos] != ord('"'):
                raise self.bad(pos, "looking for beginning of object key string")
            pos = self.ws(self.string(pos + 1))
            if pos >= len(self.data):
                raise self.eof()
            if self.data[pos] != ord(":"):
                raise self.bad(pos, "after object key")
            pos = self.ws(self.value(self.ws(pos + 1)))
            if pos >= len(self.data):
                raise self.eof()
            if self.data[pos] == ord("}"):
                return pos + 1
            if self.data[pos] != ord(","):
                raise self.bad(pos, "after object key:value pair")
            pos = self.ws(pos + 1)

    def array(self, pos: int) -> int:
        pos = self.ws(pos)
        if pos >= len(self.data):
            raise self.eof()
        if self.data[pos] == ord("]"):
            return pos + 1
        while True:
            pos = self.ws(self.value(self.ws(pos)))
            if pos >= len(self.data):
                raise self.eof()
            if self.data[pos] == ord("]"):
                return pos + 1
            if self.data[pos] != ord(","):
                raise self.bad(pos, "after array element")
            pos += 1

    def string(self, pos: int) -> int:
        data = self.data
        while True:
            if pos >= len(data):
                raise self.eof()
            char = data[pos]
            if char == ord('"'):
                return pos + 1
            if char < 0x20:
                raise self.bad(pos, "in string literal")
            if char == ord("\\"):
                pos += 1
                if pos >= len(data):
                    raise self.eof()
                if data[pos] == ord("u"):
                    for offset in range(1, 5):
                        if pos + offset >= len(data):
                            raise self.eof()
                        if chr(data[pos + offset]) not in "0123456789abcdefABCDEF":
                            raise self.bad(pos + offset, "in \\u hexadecimal character escape")
                    pos += 5
                    continue
                if data[pos] not in b'"\\/bfnrt':
                    raise self.bad(pos, "in string escape code")
            pos += 1

    def number(self, pos: int) -> int:
        data = self.data

        def digit(at: int) -> bool:
            return at < len(data) and ord("0") <= data[at] <= ord("9")

        if data[pos] == ord("-"):
            pos += 1
            if pos >= len(data):
                raise self.eof()
            if not digit(pos):
                raise self.bad(pos, "in numeric literal")
        if data[pos] == ord("0"):
            pos += 1
        else:
            while digit(pos):
                pos += 1
        if pos < len(data) and data[pos] == ord("."):
            pos += 1
            if pos >= len(data):
                raise self.eof()
            if not digit(pos):
                raise self.bad(pos, "after decimal point in numeric literal")
            while digit(pos):
                pos += 1
        if pos < len(data) and data[pos] in b"eE":
            pos += 1
            if pos < len(data) and data[pos] in b"+-":
                pos += 1
            if pos >= len(data):
                raise self.eof()
            if not digit(pos):
                raise self.bad(pos, "in exponent of numeric literal")
            while digit(pos):
                pos += 1
        return pos

    def literal(self, pos: int, word: bytes) -> int:
        for offset in range(1, len(word)):
            if pos + offset >= len(self.data):
                raise self.eof()
            if self.data[pos + offset] != word[offset]:
                expecting = _go_quote_byte(word[offset])
                raise self.bad(pos + offset, f"in literal {word.decode()} (expecting {expecting})")
        return pos + len(word)


_MISSING = object()


def _go_loads(data: bytes, *, decoder: bool = True) -> Any:
    """Parse like Go: raises _GoJSONError with Go's message; returns _MISSING for an empty body."""
    span = _GoJSONScanner(data, decoder=decoder).scan()
    if span is None:
        return _MISSING
    text = data[span[0] : span[1]].decode("utf-8", errors="replace")
    return json.loads(text, parse_float=_FloatLit)


# Go types for typed decoding: a type is a str or a tuple.
#   "string" "bool" "int" "uint32" "float32" "any" "duration" "think" "bytes"
#   ("slice", T, go_name)  ("map", T, go_name)  ("struct", StructName)
_STRUCTS: dict[str, dict[str, Any]] = {
    "Message": {
        "role": "string",
        "content": "string",
        "thinking": "string",
        "images": ("slice", "bytes", "[]api.ImageData"),
        "tool_calls": ("slice", "any", "[]api.ToolCall"),
        "tool_name": "string",
        "tool_call_id": "string",
    },
    "GenerateRequest": {
        "model": "string",
        "prompt": "string",
        "suffix": "string",
        "system": "string",
        "template": "string",
        "context": ("slice", "int", "[]int"),
        "stream": "bool",
        "raw": "bool",
        "format": "any",
        "keep_alive": "duration",
        "images": ("slice", "bytes", "[]api.ImageData"),
        "options": ("map", "any", "map[string]interface {}"),
        "think": "think",
        "truncate": "bool",
        "shift": "bool",
        "logprobs": "bool",
        "top_logprobs": "int",
    },
    "ChatRequest": {
        "model": "string",
        "messages": ("slice", ("struct", "Message"), "[]api.Message"),
        "tools": ("slice", "any", "api.Tools"),
        "stream": "bool",
        "format": "any",
        "keep_alive": "duration",
        "options": ("map", "any", "map[string]interface {}"),
        "think": "think",
        "truncate": "bool",
        "shift": "bool",
        "logprobs": "bool",
        "top_logprobs": "int",
    },
    "ShowRequest": {
        "model": "string",
        "name": "string",
        "system": "string",
        "template": "string",
        "verbose": "bool",
        "options": ("map", "any", "map[string]interface {}"),
    },
    "DeleteRequest": {"model": "string", "name": "string"},
    "CopyRequest": {"source": "string", "destination": "string"},
    "PullRequest": {
        "model": "string",
        "name": "string",
        "insecure": "bool",
        "username": "string",
        "password": "string",
        "stream": "bool",
    },
    "CreateRequest": {
        "model": "string",
        "name": "string",
        "from": "string",
        "files": ("map", "string", "map[string]string"),
        "adapters": ("map", "string", "map[string]string"),
        "template": "string",
        "system": "string",
        "parameters": ("map", "any", "map[string]interface {}"),
        "messages": ("slice", ("struct", "Message"), "[]api.Message"),
        "license": "any",
        "quantize": "string",
        "quantization": "string",
        "stream": "bool",
        "modelfile": "string",
        "path": "string",
    },
    "AdapterParameters": {
        "lora_alpha": "uint32",
        "lora_layers": "uint32",
        "lora_parameters": ("struct", ""),
    },
    "": {"rank": "uint32", "alpha": "float32", "scale": "float32"},
    "ModelParameters": {
        "architectures": ("slice", "string", "[]string"),
        "vocab_size": "uint32",
        "model_type": "string",
    },
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _literal(value: Any) -> str:
    return value.literal if isinstance(value, _FloatLit) else str(value)


class _TypedDecoder:
    """json.Unmarshal into a Go struct: the first UnmarshalTypeError, Go's wording."""

    def __init__(self) -> None:
        self.error: str | None = None

    def fail(self, value_desc: str, go_type: str, struct: str, path: list[str]) -> None:
        if self.error is None:
            where = ".".join(path)
            self.error = (
                f"json: cannot unmarshal {value_desc} into Go struct field "
                f"{struct}.{where} of type {go_type}"
            )

    def decode(self, value: Any, typ: Any, struct: str, path: list[str]) -> Any:
        if value is None:
            return None
        if isinstance(typ, tuple):
            return self._compound(value, typ, struct, path)
        if typ in ("any", "duration", "think"):
            return value
        if typ in ("string", "bytes"):
            if not isinstance(value, str):
                self.fail(_kind(value), "api.ImageData" if typ == "bytes" else typ, struct, path)
                return None
            return value
        if typ == "bool":
            if not isinstance(value, bool):
                self.fail(_kind(value), "bool", struct, path)
                return None
            return value
        if typ in ("int", "uint32"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(_kind(value), typ, struct, path)
                return None
            low, high = (0, (1 << 32) - 1) if typ == "uint32" else (-(1 << 63), _MAX_INT64)
            if isinstance(value, float) or not low <= value <= high:
                self.fail(f"number {_literal(value)}", typ, struct, path)
                return None
            return value
        if typ == "float32":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(_kind(value), "float32", struct, path)
                return None
            return float(value)
        raise AssertionError(typ)

    def _compound(self, value: Any, typ: tuple[Any, ...], struct: str, path: list[str]) -> Any:
        if typ[0] == "slice":
            if not isinstance(value, list):
                self.fail(_kind(value), typ[2], struct, path)
                return None
            return [self.decode(item, typ[1], struct, path) for item in value]
        if typ[0] == "map":
            if not isinstance(value, dict):
                self.fail(_kind(value), typ[2], struct, path)
                return None
            return {k: self.decode(v, typ[1], struct, path) for k, v in value.items()}
        name = typ[1]
        if not isinstance(value, dict):
            self.fail(_kind(value), f"api.{name}" if name else "struct", struct, path)
            return None
        return self.decode_struct(value, name, path)

    def decode_struct(self, value: dict[str, Any], name: str, path: list[str]) -> dict[str, Any]:
        fields = _STRUCTS[name]
        out: dict[str, Any] = {}
        for key, item in value.items():
            target = key if key in fields else None
            if target is None:  # encoding/json matches field names case-insensitively
                target = next((f for f in fields if f.lower() == key.lower()), None)
            if target is None:
                continue
            out[target] = self.decode(item, fields[target], name, [*path, target])
        return out


def _go_unmarshal_struct(value: Any, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Decode a parsed JSON value into struct `name`; (result, error message)."""
    if not isinstance(value, dict):
        package = "convert" if name in ("AdapterParameters", "ModelParameters") else "api"
        return None, f"json: cannot unmarshal {_kind(value)} into Go value of type {package}.{name}"
    decoder = _TypedDecoder()
    out = decoder.decode_struct(value, name, [])
    return (None, decoder.error) if decoder.error else (out, None)


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def _go_parse_duration(text: str) -> int:
    """time.ParseDuration, in nanoseconds; raises ValueError with Go's message."""
    quoted = _go_quote(text)
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while rest:
        match = re.match(r"([0-9]*)(\.[0-9]*)?", rest)
        assert match is not None
        whole, frac = match.group(1), match.group(2) or ""
        if not whole and len(frac) <= 1:
            raise ValueError(f"time: invalid duration {quoted}")
        rest = rest[match.end() :]
        unit_match = re.match(r"[^0-9.]*", rest)
        assert unit_match is not None
        unit = unit_match.group(0)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {quoted}")
        total += float((whole or "0") + (frac or "")) * _DURATION_UNITS[unit]
        rest = rest[len(unit) :]
    if total > _MAX_INT64:
        raise ValueError(f"time: invalid duration {quoted}")
    return -int(total) if negative else int(total)


def _go_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return "float64" if isinstance(value, int | float) else "string"


def _parse_keep_alive(value: Any) -> int | None:
    """api.Duration: None (absent), 0 (unload now), _FOREVER, or nanoseconds. ValueError on junk."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"Unsupported type: '{_go_type_name(value)}'")
    if isinstance(value, str):
        nanos = _go_parse_duration(value)
        return _FOREVER if nanos < 0 else nanos
    if value < 0:
        return _FOREVER
    return int(value * 1_000_000_000)


def _check_think(value: Any) -> str | None:
    """api.ThinkValue: error message or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value in ("high", "medium", "low", "max"):
            return None
        return (
            f"invalid think value: {_go_quote(value)} "
            '(must be "high", "medium", "low", true, or false)'
        )
    return 'think must be a boolean or string ("high", "medium", "low", true, or false)'


# api.Options kinds (api/types.go), for Options.FromMap's type checks.
_OPTION_KINDS = {
    **dict.fromkeys(
        (
            "num_ctx",
            "num_batch",
            "num_gpu",
            "main_gpu",
            "num_thread",
            "num_keep",
            "seed",
            "num_predict",
            "top_k",
            "repeat_last_n",
            "draft_num_predict",
        ),
        "int",
    ),
    **dict.fromkeys(
        (
            "top_p",
            "min_p",
            "typical_p",
            "temperature",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ),
        "float",
    ),
    "use_mmap": "boolptr",
    "stop": "slice",
}


def _check_options(options: dict[str, Any]) -> str | None:
    """Options.FromMap: the first type error, worded as Go words it."""
    for key, value in options.items():
        kind = _OPTION_KINDS.get(key)
        if kind is None or value is None:
            continue  # unknown options are ignored (with a server log warning)
        quoted = _go_quote(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "int" and not number:
            return f"option {quoted} must be of type integer"
        if kind == "float" and not number:
            return f"option {quoted} must be of type float32"
        if kind == "boolptr" and not isinstance(value, bool):
            return f"option {quoted} must be of type boolean"
        if kind == "slice":
            if not isinstance(value, list):
                return f"option {quoted} must be of type array"
            if not all(isinstance(item, str) for item in value):
                return f"option {quoted} must be of an array of strings"
    return None


# ---------------------------------------------------------------------------------------------
# Model names: [host/][namespace/]model[:tag]
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Name:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> str:
        return self.full().lower()

    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def short(self) -> str:
        """Name.DisplayShortest."""
        if self.host.lower() != _DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != _DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"


_PART_LIMITS = {"host": 350, "namespace": 80, "model": 80, "tag": 80}


def _valid_part(kind: str, text: str) -> bool:
    if not 1 <= len(text) <= _PART_LIMITS[kind]:
        return False
    for index, char in enumerate(text):
        if char.isascii() and (char.isalnum() or char == "_"):
            continue
        if index == 0:
            return False
        if char == "-" or (char == "." and kind != "namespace") or (char == ":" and kind == "host"):
            continue
        return False
    return True


def _parse_name(text: str) -> _Name | None:
    """model.ParseName plus IsValid: None for an invalid name."""
    if not text:
        return None
    if "@" in text:
        text = text.rsplit("@", 1)[0]
    tag = _DEFAULT_TAG
    if text.rfind(":") > text.rfind("/"):
        text, tag = text.rsplit(":", 1)
        if not tag:
            return None
    parts = text.split("/")
    if len(parts) == 1:
        host, namespace, model = _DEFAULT_HOST, _DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, (namespace, model) = _DEFAULT_HOST, parts
    elif len(parts) == 3:
        host, namespace, model = parts
    else:
        return None
    name = _Name(host, namespace, model, tag)
    checks = (("host", host), ("namespace", namespace), ("model", model), ("tag", tag))
    if not all(_valid_part(kind, part) for kind, part in checks):
        return None
    return name


# ---------------------------------------------------------------------------------------------
# Go text/template syntax check (what template.Parse would reject)
# ---------------------------------------------------------------------------------------------


class _TemplateError(Exception):
    pass


_TPL_VARIABLE = re.compile(r"\$[A-Za-z0-9_]*((\.[A-Za-z0-9_]+)*)")
_TPL_FIELD = re.compile(r"(\.[A-Za-z_][A-Za-z0-9_]*)+")
_TPL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*((\.[A-Za-z0-9_]+)*)")
_TPL_NUMBER = re.compile(r"[+-]?[0-9A-Za-z_.]+([eEpP][+-][0-9]+)?")


@dataclass
class _Tok:
    kind: str
    text: str

    def describe(self) -> str:
        """item.String() of text/template/parse."""
        if self.kind == "keyword":
            return f"<{self.text}>"
        if len(self.text) > 10:
            return _go_quote(self.text[:10]) + "..."
        return _go_quote(self.text)


@dataclass
class _Frame:
    kind: str
    mark: int
    saw_else: bool = False
    saved_vars: list[str] | None = None


class _TemplateChecker:
    KEYWORDS = frozenset(
        ("if", "else", "end", "range", "with", "define", "block", "template", "break", "continue")
    )
    FUNCTIONS = frozenset(
        (
            # text/template builtins
            "and",
            "call",
            "html",
            "index",
            "slice",
            "js",
            "len",
            "not",
            "or",
            "print",
            "printf",
            "println",
            "urlquery",
            "eq",
            "ge",
            "gt",
            "le",
            "lt",
            "ne",
            # Ollama's template.FuncMap
            "json",
            "currentDate",
            "yesterdayDate",
            "toTypeScriptType",
            "formatDate",
        )
    )

    def __init__(self, source: str) -> None:
        self.src = source

    def err(self, line: int, message: str) -> _TemplateError:
        return _TemplateError(f"template: :{line}: {message}")

    def check(self) -> None:
        stack: list[_Frame] = []
        variables = ["$"]
        for toks, line in self._actions():
            variables = self._action(toks, line, stack, variables)
        if stack:
            raise self.err(self.src.count("\n") + 1, "unexpected EOF")

    # -- lexing ------------------------------------------------------------------------------

    def _actions(self) -> Iterator[tuple[list[_Tok], int]]:
        src = self.src
        pos = 0
        while True:
            start = src.find("{{", pos)
            if start < 0:
                return
            line = src.count("\n", 0, start) + 1
            inner = start + 2
            if src[inner : inner + 1] == "-" and src[inner + 1 : inner + 2] in (
                " ",
                "\t",
                "\r",
                "\n",
            ):
                inner += 2
            if src.startswith("/*", inner):
                close = src.find("*/", inner + 2)
                if close < 0:
                    raise self.err(line, "unclosed comment")
                after = close + 2
                if src.startswith(" -}}", after) or src.startswith("\t-}}", after):
                    pos = after + 4
                elif src.startswith("}}", after):
                    pos = after + 2
                else:
                    raise self.err(line, "comment ends before closing delimiter")
                continue
            toks, pos = self._lex_action(inner, line)
            yield toks, line

    def _lex_action(self, pos: int, line: int) -> tuple[list[_Tok], int]:
        src = self.src
        toks: list[_Tok] = []
        depth = 0
        while True:
            if pos >= len(src):
                raise self.err(line, "unclosed action")
            char = src[pos]
            if char in " \t\r\n":
                if src.startswith("-}}", pos + 1):
                    if depth:
                        raise self.err(line, "unclosed left paren")
                    return toks, pos + 4
                pos += 1
                continue
            if src.startswith("}}", pos):
                if depth:
                    raise self.err(line, "unclosed left paren")
                return toks, pos + 2
            if char == '"':
                end = pos + 1
                while True:
                    if end >= len(src) or src[end] == "\n":
                        raise self.err(line, "unterminated quoted string")
                    if src[end] == "\\":
                        end += 2
                        continue
                    if src[end] == '"':
                        break
                    end += 1
                toks.append(_Tok("string", src[pos : end + 1]))
                pos = end + 1
            elif char == "`":
                end = src.find("`", pos + 1)
                if end < 0:
                    raise self.err(line, "unterminated raw quoted string")
                toks.append(_Tok("string", src[pos : end + 1]))
                pos = end + 1
            elif char == "'":
                end = pos + 1
                while end < len(src) and src[end] != "'":
                    end += 2 if src[end] == "\\" else 1
                if end >= len(src):
                    raise self.err(line, "unterminated character constant")
                toks.append(_Tok("char", src[pos : end + 1]))
                pos = end + 1
            elif char in "()|,=":
                if char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth < 0:
                        raise self.err(line, "unexpected right paren U+0029 ')'")
                toks.append(_Tok(char, char))
                pos += 1
            elif char == ":":
                if not src.startswith(":=", pos):
                    raise self.err(line, "expected :=")
                toks.append(_Tok(":=", ":="))
                pos += 2
            elif char == "$":
                match = _TPL_VARIABLE.match(src, pos)
                assert match is not None
                toks.append(_Tok("variable", match.group(0)))
                pos = match.end()
            elif char == ".":
                match = _TPL_FIELD.match(src, pos)
                if match:
                    toks.append(_Tok("field", match.group(0)))
                    pos = match.end()
                elif src[pos + 1 : pos + 2].isdigit():
                    pos = self._lex_number(pos, toks)
                else:
                    toks.append(_Tok("dot", "."))
                    pos += 1
            elif char.isdigit() or (char in "+-" and src[pos + 1 : pos + 2].isdigit()):
                pos = self._lex_number(pos, toks)
            elif char.isalpha() or char == "_":
                match = _TPL_IDENTIFIER.match(src, pos)
                assert match is not None
                word = match.group(0)
                kind = "keyword" if word in self.KEYWORDS else "identifier"
                toks.append(_Tok(kind, word))
                pos = match.end()
            else:
                raise self.err(
                    line, f"unrecognized character in action: U+{ord(char):04X} {char!r}"
                )

    def _lex_number(self, pos: int, toks: list[_Tok]) -> int:
        match = _TPL_NUMBER.match(self.src, pos)
        assert match is not None
        toks.append(_Tok("number", match.group(0)))
        return match.end()

    # -- parsing -----------------------------------------------------------------------------

    def _action(
        self, toks: list[_Tok], line: int, stack: list[_Frame], variables: list[str]
    ) -> list[str]:
        if not toks:
            raise self.err(line, "missing value for command")
        head, rest = toks[0], toks[1:]
        if head.kind != "keyword":
            self._pipeline(toks, line, "command", variables)
            return variables
        word = head.text
        if word in ("if", "with", "range"):
            mark = len(variables)
            self._pipeline(rest, line, word, variables, two_vars=word == "range")
            stack.append(_Frame(word, mark))
        elif word == "else":
            if not stack or stack[-1].kind not in ("if", "with", "range"):
                raise self.err(line, "unexpected {{else}}")
            frame = stack[-1]
            if frame.saw_else:
                raise self.err(line, "expected end; found {{else}}")
            if not rest:
                frame.saw_else = True
            elif rest[0].kind == "keyword" and rest[0].text in ("if", "with"):
                # {{else if}} chains inside an if, {{else with}} inside a with; elsewhere
                # the parser meets the keyword as the start of the else branch's input.
                if rest[0].text != frame.kind:
                    raise self.err(line, f"unexpected {rest[0].describe()} in input")
                self._pipeline(rest[1:], line, frame.kind, variables)
            else:
                raise self.err(line, f"unexpected {rest[0].describe()} in else")
        elif word == "end":
            if rest:
                raise self.err(line, f"unexpected {rest[0].describe()} in end")
            if not stack:
                raise self.err(line, "unexpected {{end}}")
            frame = stack.pop()
            if frame.saved_vars is not None:
                return frame.saved_vars
            del variables[frame.mark :]
        elif word in ("define", "block"):
            context = f"{word} clause"
            if word == "define" and stack:
                raise self.err(line, "unexpected <define> in command")
            if not rest or rest[0].kind != "string":
                found = rest[0].describe() if rest else "<}}>"
                raise self.err(line, f"unexpected {found} in {context}")
            if word == "define" and len(rest) > 1:
                raise self.err(line, f"unexpected {rest[1].describe()} in {context}")
            if word == "block":
                self._pipeline(rest[1:], line, context, variables)
            stack.append(_Frame(word, len(variables), saved_vars=variables))
            return ["$"]
        elif word == "template":
            if not rest or rest[0].kind != "string":
                found = rest[0].describe() if rest else "<}}>"
                raise self.err(line, f"unexpected {found} in template clause")
            if len(rest) > 1:
                self._pipeline(rest[1:], line, "template clause", variables)
        elif word in ("break", "continue"):
            if rest:
                raise self.err(line, f"unexpected {rest[0].describe()} in {{{{{word}}}}}")
            inside_range = False
            for frame in reversed(stack):
                if frame.kind == "range":
                    inside_range = True
                    break
                if frame.kind in ("define", "block"):
                    break
            if not inside_range:
                raise self.err(line, f"{{{{{word}}}}} outside {{{{range}}}}")
        return variables

    def _pipeline(
        self,
        toks: list[_Tok],
        line: int,
        context: str,
        variables: list[str],
        *,
        two_vars: bool = False,
    ) -> None:
        declared: list[str] = []
        if len(toks) >= 2 and toks[0].kind == "variable" and toks[1].kind in (":=", "="):
            if toks[1].kind == "=" and toks[0].text not in variables:
                raise self.err(line, f"undefined variable {_go_quote(toks[0].text)}")
            if toks[1].kind == ":=":
                declared.append(toks[0].text)
            toks = toks[2:]
        elif (
            two_vars
            and len(toks) >= 4
            and toks[0].kind == "variable"
            and toks[1].kind == ","
            and toks[2].kind == "variable"
            and toks[3].kind in (":=", "=")
        ):
            declared += [toks[0].text, toks[2].text]
            toks = toks[4:]
        if not toks:
            raise self.err(line, f"missing value for {context}")
        commands: list[list[_Tok]] = [[]]
        depth = 0
        for tok in toks:
            if tok.kind == "|" and depth == 0:
                commands.append([])
                continue
            depth += tok.kind == "("
            depth -= tok.kind == ")"
            commands[-1].append(tok)
        for command in commands:
            if not command:
                raise self.err(line, "missing command")
            if len(command) == 1 and command[0].kind == "identifier" and command[0].text == "nil":
                raise self.err(line, "nil is not a command")
            for tok in command:
                self._operand(tok, line, variables)
        variables.extend(declared)

    def _operand(self, tok: _Tok, line: int, variables: list[str]) -> None:
        if tok.kind == "keyword":
            raise self.err(line, f"unexpected {tok.describe()} in command")
        if tok.kind in (":=", "="):
            raise self.err(line, f"unexpected {tok.describe()} in operand")
        if tok.kind == "identifier":
            base = tok.text.split(".", 1)[0]
            if base not in ("true", "false", "nil") and base not in self.FUNCTIONS:
                raise self.err(line, f"function {_go_quote(base)} not defined")
        if tok.kind == "variable":
            base = "$" + tok.text[1:].split(".", 1)[0]
            if base not in variables:
                raise self.err(line, f"undefined variable {_go_quote(base)}")


def _check_template(source: str) -> str | None:
    """Go's template.Parse error message for `source`, or None when it parses."""
    try:
        _TemplateChecker(source).check()
    except _TemplateError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# File formats: GGUF (metadata only) and safetensors headers
# ---------------------------------------------------------------------------------------------


class _FormatError(Exception):
    pass


@dataclass
class _ArrayInfo:
    """A GGUF array too long to keep: only its length."""

    count: int


@dataclass
class _GGUF:
    kv: dict[str, Any]
    tensors: list[dict[str, Any]]


_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


class _GGUFReader:
    def __init__(self, handle: io.BufferedReader) -> None:
        self.f = handle
        self.wide = True

    def take(self, size: int) -> bytes:
        data = self.f.read(size)
        if len(data) < size:
            raise _FormatError("unexpected EOF")
        return data

    def uint(self, wide: bool) -> int:
        return struct.unpack("<Q" if wide else "<I", self.take(8 if wide else 4))[0]

    def string(self) -> str:
        length = self.uint(self.wide)
        if length > 1 << 26:
            raise _FormatError("invalid string length in GGUF metadata")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[vtype]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype = self.uint(False)
            count = self.uint(self.wide)
            if count > 1 << 26:
                raise _FormatError("invalid array length in GGUF metadata")
            items = [self.value(etype) for _ in range(count)]
            return items if count <= 5 else _ArrayInfo(count)
        raise _FormatError(f"invalid type: {vtype}")


def _read_gguf(path: Path) -> _GGUF:
    """The key/values and tensor infos of a GGUF file (ggml.Decode's checks and messages)."""
    with path.open("rb") as handle:
        reader = _GGUFReader(handle)  # type: ignore[arg-type]
        magic = handle.read(4)
        if magic != b"GGUF":
            raise _FormatError("invalid file magic")
        version = reader.uint(False)
        if version not in (1, 2, 3):
            raise _FormatError(f"unsupported version {version}")
        reader.wide = version > 1
        n_tensors = reader.uint(reader.wide)
        n_kv = reader.uint(reader.wide)
        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key = reader.string()
            kv[key] = reader.value(reader.uint(False))
        tensors = []
        for _ in range(n_tensors):
            name = reader.string()
            dims = [reader.uint(reader.wide) for _ in range(reader.uint(False))]
            ttype = reader.uint(False)
            reader.uint(True)  # offset
            tensors.append(
                {"name": name, "type": _GGML_TYPES.get(ttype, str(ttype)), "shape": dims}
            )
    return _GGUF(kv, tensors)


def _read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """name -> {dtype, shape, data_offsets} from a safetensors file's JSON header."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise _FormatError("unexpected EOF")
        (length,) = struct.unpack("<Q", head)
        if length > 100 << 20:
            raise _FormatError(f"safetensors header is too large: {length} bytes")
        raw = handle.read(length)
        if len(raw) < length:
            raise _FormatError("unexpected EOF")
    try:
        header = _go_loads(raw, decoder=False)
    except _GoJSONError as exc:
        raise _FormatError(str(exc)) from None
    if not isinstance(header, dict):
        raise _FormatError(
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        )
    header.pop("__metadata__", None)
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise _FormatError(f"invalid safetensors header entry for {name!r}")
    return header


def _is_gguf_blob(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def _fs_valid_path(name: str) -> bool:
    """io/fs.ValidPath."""
    if name == ".":
        return True
    if not name or name.startswith("/") or name.endswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------


class _Abort(Exception):
    """The client went away, the server is stopping, or a fault cut the connection."""


@dataclass
class _Err:
    """An error event of a stream: an HTTP status before the first line, an error line after."""

    message: str
    status: int = 500


@dataclass
class _Commit:
    """A side effect (storing a model) that runs only if the stream is going to succeed."""

    fn: Callable[[], None]


@dataclass
class _Fault:
    kind: str
    status: int = 0
    message: str = ""
    after_lines: int = 0
    seconds: float = 0.0


class _Body:
    """The request body, read incrementally: Content-Length or chunked transfer coding."""

    def __init__(self, rfile: io.BufferedIOBase, headers: dict[str, str]) -> None:
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.remaining = 0
        if not self.chunked:
            try:
                self.remaining = max(int(headers.get("content-length") or 0), 0)
            except ValueError:
                self.remaining = 0
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0
        self.total = 0

    def read(self, size: int = 1 << 16) -> bytes:
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(size, self.remaining))
            if not data:
                raise _Abort
            self.remaining -= len(data)
            self.total += len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            line = self.rfile.readline(1024)
            if not line:
                raise _Abort
            try:
                chunk = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise _Abort from None
            if chunk == 0:
                while True:
                    trailer = self.rfile.readline(1024)
                    if not trailer or trailer in (b"\r\n", b"\n"):
                        break
                self.done = True
                return b""
            self.chunk_left = chunk
        data = self.rfile.read(min(size, self.chunk_left))
        if not data:
            raise _Abort
        self.chunk_left -= len(data)
        self.total += len(data)
        if self.chunk_left == 0:
            self.rfile.readline(16)
        return data

    def read_all(self) -> bytes:
        parts = []
        while chunk := self.read():
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read():
            pass


class _Exchange:
    """One request and its response on a connection."""

    def __init__(self, handler: _Handler, standin: OllamaStandIn) -> None:
        self.handler = handler
        self.standin = standin
        self.method = handler.command
        self.path = handler.path.split("?", 1)[0]
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.sock: socket.socket = handler.connection
        self.body = _Body(handler.rfile, self.headers)
        self.arrived_ns = time.perf_counter_ns()
        self.faults: dict[str, _Fault] = {}
        self.raw_body = b""
        self.before_response: Callable[[], None] | None = None
        self.started = False
        self.streaming = False
        self.lines = 0

    # -- timing and disconnects --------------------------------------------------------------

    def client_gone(self, timeout: float = 0.0) -> bool:
        """Whether the client closed its end, waiting up to `timeout` seconds to find out."""
        try:
            poller = select.poll()  # not select.select: it fails for descriptors above 1023
            poller.register(self.sock, select.POLLIN | select.POLLPRI)
            if not poller.poll(int(timeout * 1000)):
                return False
            if self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return True
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True
        time.sleep(timeout)  # data waiting (a pipelined request): not a disconnect
        return False

    def sleep(self, seconds: float) -> None:
        """Wait, but give up (raise _Abort) if the client leaves or the server stops."""
        deadline = time.monotonic() + seconds
        while True:
            if self.standin._stopping.is_set():
                raise _Abort
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.client_gone(min(remaining, 0.05)):
                raise _Abort

    # -- writing -----------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self.started:
            self.body.drain()
            if self.before_response is not None:
                self.before_response()
            self.started = True

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.handler.close_connection = True
        raise _Abort

    def send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        during = self.faults.pop("fail_during", None)
        if during is not None and status == 200 and self.method != "HEAD":
            self.start_stream()
            self.write_line({"error": during.message})
            self.end_stream()
            return
        self._begin()
        drop = self.faults.pop("drop", None)
        if drop is not None and (not body or self.method == "HEAD"):
            self.abort()
        handler = self.handler
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if self.method == "HEAD" or not body:
            return
        if drop is not None:
            handler.wfile.write(body[: max(len(body) // 2, 1)])
            self.abort()
        handler.wfile.write(body)

    def send_json(self, status: int, obj: Any, content_type: str = _CT_JSON) -> None:
        self.send(status, _go_json(obj), content_type)

    def send_error(self, status: int, message: str, content_type: str = _CT_JSON) -> None:
        self.send_json(status, {"error": message}, content_type)

    def start_stream(self, content_type: str = _CT_NDJSON) -> None:
        self._begin()
        handler = self.handler
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self.streaming = True

    def write_line(self, obj: Any) -> None:
        data = _go_json(obj) + b"\n"
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.lines += 1

    def end_stream(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")

    # -- event streams -----------------------------------------------------------------------

    def run_events(
        self,
        events: Iterator[Any],
        *,
        stream: bool,
        aggregate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        ok_type: str,
        err_type: str,
    ) -> None:
        """Send the events of a handler: NDJSON (streamResponse) or one object (waitForStream)."""
        try:
            if stream:
                self._stream_events(events, err_type)
            else:
                self._collect_events(events, aggregate, ok_type, err_type)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _collect_events(
        self,
        events: Iterator[Any],
        aggregate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        ok_type: str,
        err_type: str,
    ) -> None:
        during = self.faults.pop("fail_during", None)
        if during is not None:
            self.send_error(500, during.message, err_type)
            return
        collected: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, _Commit):
                if self.client_gone():
                    raise _Abort
                event.fn()
            elif isinstance(event, _Err):
                self.send_error(event.status, event.message, err_type)
                return
            else:
                collected.append(event)
        self.send_json(200, aggregate(collected), ok_type)

    def _stream_events(self, events: Iterator[Any], err_type: str) -> None:
        during = self.faults.pop("fail_during", None)
        drop = self.faults.pop("drop", None)
        end = object()
        pending = next(events, end)
        while pending is not end:
            event = pending
            if isinstance(event, _Commit):
                if during is not None:
                    self._fail_line(during.message)
                    return
                if self.client_gone():
                    raise _Abort
                event.fn()
                pending = next(events, end)
                continue
            if isinstance(event, _Err):
                if self.streaming:
                    self.write_line({"error": event.message})
                    self.end_stream()
                else:
                    self.send_error(event.status, event.message, err_type)
                return
            if during is not None:
                following = next(events, end)
                if self.lines >= during.after_lines or following is end:
                    self._fail_line(during.message)
                    return
                self._write_event(event, drop)
                pending = following
                continue
            self._write_event(event, drop)
            pending = next(events, end)
        if drop is not None:
            self.abort()
        if not self.streaming:
            self.start_stream()
        self.end_stream()

    def _write_event(self, event: dict[str, Any], drop: _Fault | None) -> None:
        if drop is not None and self.lines >= drop.after_lines:
            self.abort()
        if not self.streaming:
            self.start_stream()
        self.write_line(event)

    def _fail_line(self, message: str) -> None:
        if not self.streaming:
            self.start_stream()
        self.write_line({"error": message})
        self.end_stream()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "OllamaStandIn"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""

    def _dispatch(self) -> None:
        standin = self.server.standin
        exchange = _Exchange(self, standin)
        try:
            standin._handle(exchange)
        except (_Abort, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:
            import traceback

            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            if not exchange.started:
                with contextlib.suppress(Exception):
                    exchange.send_error(500, "ollama stand-in: internal error (see stderr)")

    # http.server's method names.
    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], standin: OllamaStandIn) -> None:
        self.standin = standin
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="ollama-stand-in-connection",
            daemon=True,
        )
        self.standin._track(thread, request)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.standin._untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError | _Abort):
            return
        super().handle_error(request, client_address)


def _host_allowed(host_header: str) -> bool:
    """allowedHostsMiddleware for a server listening on loopback."""
    host = host_header.strip()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return address.is_loopback or address.is_private or address.is_unspecified
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith((".localhost", ".local", ".internal"))


# Known routes: path -> allowed methods. Blob paths are matched by prefix.
_ROUTES = {
    "/": ("GET", "HEAD"),
    "/api/version": ("GET", "HEAD"),
    "/api/tags": ("GET", "HEAD"),
    "/api/ps": ("GET",),
    "/api/show": ("POST",),
    "/api/delete": ("DELETE",),
    "/api/copy": ("POST",),
    "/api/pull": ("POST",),
    "/api/push": ("POST",),
    "/api/create": ("POST",),
    "/api/generate": ("POST",),
    "/api/chat": ("POST",),
    "/api/embed": ("POST",),
    "/api/embeddings": ("POST",),
}
_BLOB_PREFIX = "/api/blobs/"


# ---------------------------------------------------------------------------------------------
# The stand-in
# ---------------------------------------------------------------------------------------------


class OllamaStandIn:
    """An Ollama server for tests. See the module docstring and OLLAMA_API.md."""

    def __init__(self, version: str = "0.12.6", *, root: Path | None = None) -> None:
        self.version = version
        self.pull_chunk_delay: float = 0.01
        self.pull_steps: int = 4  # progress lines per layer (a benchmark asks for thousands)
        self.token_delay: float = 0.0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._models: dict[str, StoredModel] = {}
        self._registry: dict[str, tuple[StoredModel, dict[str, bytes]]] = {}
        self._replies: dict[str, str | Callable[[str], str]] = {}
        self._faults: dict[str, dict[str, _Fault]] = {}
        self._loaded: dict[str, tuple[int, int]] = {}  # key -> (expires_at ns, context length)
        self._stopping = threading.Event()
        self._conns: dict[Any, threading.Thread] = {}
        self._conn_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="ollama-stand-in-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
        else:
            self._cleanup = None
        self.root = root
        self.blobs_dir = root / "blobs"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the Ollama stand-in has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> OllamaStandIn:
        """Listen (again): the first start picks a free port, later ones rebind the same one."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", self._port), self)
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="ollama-stand-in",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection; the store is kept for a restart."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._conn_lock:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _sock, thread in conns:
            thread.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        self._stopping.clear()

    def close(self) -> None:
        """stop() and delete the blob folder (when the stand-in made it)."""
        self.stop()
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, thread: threading.Thread, sock: Any) -> None:
        with self._conn_lock:
            self._conns[sock] = thread

    def _untrack(self, sock: Any) -> None:
        with self._conn_lock:
            self._conns.pop(sock, None)

    # -- test controls -----------------------------------------------------------------------

    def set_reply(self, model: str, reply: str | Callable[[str], str]) -> None:
        """What generate/chat answer for `model`.

        A callable gets the prompt (generate) or the last user message's content (chat).
        """
        self._replies[self._require_name(model).key] = reply

    def fail_before_stream(self, path: str, status: int, message: str) -> None:
        """The next request to `path` gets HTTP `status` with {"error": message} (JSON)."""
        self._add_fault(path, _Fault("fail_before", status=status, message=message))

    def fail_during_stream(self, path: str, message: str, after_lines: int = 1) -> None:
        """The next request to `path` gets 200 NDJSON: `after_lines` normal lines, then an error."""
        self._add_fault(path, _Fault("fail_during", message=message, after_lines=after_lines))

    def slow_first_byte(self, path: str, seconds: float) -> None:
        """The next request to `path` waits `seconds` before anything is sent (a slow load)."""
        self._add_fault(path, _Fault("slow", seconds=seconds))

    def drop_connection(self, path: str, after_lines: int = 1) -> None:
        """The next request to `path` gets `after_lines` lines, then the socket is cut mid-body."""
        self._add_fault(path, _Fault("drop", after_lines=after_lines))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, path: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(path, {})[fault.kind] = fault

    def _take_faults(self, path: str) -> dict[str, _Fault]:
        with self._lock:
            faults = self._faults.pop(path, {})
            if path.startswith(_BLOB_PREFIX):
                faults = {**self._faults.pop("/api/blobs", {}), **faults}
            return faults

    # -- the store ---------------------------------------------------------------------------

    def add_model(
        self,
        name: str,
        *,
        family: str = "llama",
        parameter_size: str = "135M",
        quantization_level: str = "Q8_0",
        context_length: int = 2048,
        embedding_length: int = 576,
        block_count: int = 30,
        head_count: int = 9,
        head_count_kv: int = 3,
        vocab_size: int = 49152,
        template: str = "{{ .Prompt }}",
        parameters: dict[str, Any] | None = None,
        system: str = "",
        license: str = "",
        size: int = 270_000_000,
        feed_forward_length: int | None = None,
    ) -> None:
        """Put a model straight into the store (its blobs are small synthetic files)."""
        model, blobs = self._build_model(
            name,
            family=family,
            parameter_size=parameter_size,
            quantization_level=quantization_level,
            context_length=context_length,
            embedding_length=embedding_length,
            block_count=block_count,
            head_count=head_count,
            head_count_kv=head_count_kv,
            vocab_size=vocab_size,
            template=template,
            parameters=parameters,
            system=system,
            license=license,
            feed_forward_length=feed_forward_length,
            sizes=None,
            size=size,
        )
        for data in blobs.values():
            self._put_blob(data)
        parsed = self._require_name(name)
        with self._lock:
            existing = self._models.get(parsed.key)
            model.name = existing.name if existing else parsed.short()
            model.modified_at_ns = time.time_ns()
            self._finalize(model)
            self._models[parsed.key] = model

    def add_registry_model(
        self, name: str, *, layer_sizes: Sequence[int] = (5_000_000, 1_000), **kwargs: Any
    ) -> None:
        """A model that /api/pull (or create `from`) can fetch from "the registry".

        ``layer_sizes[i]`` is the size reported for the i-th layer (model, template, then system,
        params and license when present); sizes beyond those add opaque data layers.
        """
        kwargs.pop("size", None)
        model, blobs = self._build_model(name, sizes=list(layer_sizes), size=0, **kwargs)
        parsed = self._require_name(name)
        model.name = parsed.short()
        self._finalize(model)
        with self._lock:
            self._registry[parsed.key] = (model, blobs)

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(m.name for m in self._models.values())

    def model(self, name: str) -> StoredModel:
        """A copy of the stored model (KeyError if there is none by that name)."""
        parsed = self._require_name(name)
        with self._lock:
            stored = self._models.get(parsed.key)
            if stored is None:
                raise KeyError(name)
            return copy.deepcopy(stored)

    def has_model(self, name: str) -> bool:
        parsed = _parse_name(name)
        with self._lock:
            return parsed is not None and parsed.key in self._models

    def blob_path(self, digest: str) -> Path | None:
        """The file of a stored blob (``sha256:<hex>`` or ``sha256-<hex>``), or None."""
        if not _DIGEST_RE.match(digest):
            return None
        path = self.blobs_dir / ("sha256-" + digest[7:].lower())
        return path if path.is_file() else None

    def loaded_models(self) -> list[str]:
        """Names /api/ps would list now."""
        with self._lock:
            self._purge_loaded()
            return [self._models[k].name for k in self._loaded if k in self._models]

    def _require_name(self, name: str) -> _Name:
        parsed = _parse_name(name)
        if parsed is None:
            raise ValueError(f"invalid model name: {name!r}")
        return parsed

    def _put_blob(self, data: bytes) -> str:
        digest = "sha256:" + _sha256_hex(data)
        path = self.blobs_dir / digest.replace(":", "-")
        if not path.exists():
            tmp = path.with_name(path.name + f".tmp-{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    def _blob_file(self, digest: str) -> Path:
        """manifest.BlobsPath: the digest as given, ':' made '-' (so the case matters)."""
        return self.blobs_dir / digest.replace(":", "-")

    def _build_model(
        self,
        name: str,
        *,
        family: str = "llama",
        parameter_size: str = "135M",
        quantization_level: str = "Q8_0",
        context_length: int = 2048,
        embedding_length: int = 576,
        block_count: int = 30,
        head_count: int = 9,
        head_count_kv: int = 3,
        vocab_size: int = 49152,
        template: str = "{{ .Prompt }}",
        parameters: dict[str, Any] | None = None,
        system: str = "",
        license: str = "",
        feed_forward_length: int | None = None,
        sizes: list[int] | None,
        size: int,
    ) -> tuple[StoredModel, dict[str, bytes]]:
        parameter_count = _parse_human_number(parameter_size)
        info = _synthetic_model_info(
            family=family,
            parameter_count=parameter_count,
            file_type=_FILE_TYPES.get(quantization_level.upper(), 0),
            context_length=context_length,
            embedding_length=embedding_length,
            block_count=block_count,
            head_count=head_count,
            head_count_kv=head_count_kv,
            vocab_size=vocab_size,
            feed_forward_length=feed_forward_length,
        )
        weights = _go_json({"stand-in weights": name, "model_info": info}) + b"\n"
        blobs: dict[str, bytes] = {}
        layers: list[Layer] = []

        def add(media_type: str, data: bytes) -> None:
            digest = "sha256:" + _sha256_hex(data)
            blobs[digest] = data
            layers.append(Layer(media_type, digest, len(data)))

        add(_MT_MODEL, b"GGUF" + weights)
        template = template or "{{ .Prompt }}"
        add(_MT_TEMPLATE, template.encode())
        if system:
            add(_MT_SYSTEM, system.encode())
        params = dict(parameters or {})
        if params:
            add(_MT_PARAMS, json.dumps(params, sort_keys=True).encode() + b"\n")
        if license:
            add(_MT_LICENSE, license.encode())
        if sizes is None:
            others = sum(layer.size for layer in layers[1:])
            layers[0].size = max(size - others, 0)
        else:
            for index, nominal in enumerate(sizes):
                if index < len(layers):
                    layers[index].size = int(nominal)
                else:
                    add(_MT_DATA, f"stand-in data layer {index} of {name}".encode())
                    layers[-1].size = int(nominal)
        model = StoredModel(
            name=name,
            family=family,
            template=template,
            system=system,
            parameters=params,
            licenses=[license] if license else [],
            quantization_level=quantization_level.upper(),
            model_info=info,
            parameter_size=parameter_size,
            layers=layers,
            tensors=_synthetic_tensors(info, family, quantization_level.upper()),
        )
        return model, blobs

    def _finalize(self, model: StoredModel) -> None:
        """Write the config blob and compute the manifest digest and size."""
        config = {
            "model_format": model.format,
            "model_family": model.family,
            "model_families": [model.family],
            "model_type": model.parameter_size,
            "file_type": model.quantization_level,
            "parent_model": model.parent_model,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in model.layers]},
        }
        config_bytes = _go_json(config)
        model.config_digest = self._put_blob(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MT_MANIFEST,
            "config": {
                "mediaType": _MT_CONFIG,
                "digest": model.config_digest,
                "size": len(config_bytes),
            },
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in model.layers
            ],
        }
        model.digest = _sha256_hex(_go_json(manifest))
        model.size = sum(layer.size for layer in model.layers)
        model.adapters = [layer.digest for layer in model.layers if layer.media_type == _MT_ADAPTER]

    def _referenced_digests(self) -> set[str]:
        with self._lock:
            used = set()
            for model in self._models.values():
                used.update(layer.digest for layer in model.layers)
                used.add(model.config_digest)
            return used

    def _prune(self, digests: set[str]) -> None:
        used = self._referenced_digests()
        for digest in digests - used:
            with contextlib.suppress(OSError):
                self._blob_file(digest).unlink()

    def _store(self, model: StoredModel, name: _Name) -> None:
        with self._lock:
            existing = self._models.get(name.key)
            model.name = existing.name if existing else name.short()
            model.modified_at_ns = time.time_ns()
            self._finalize(model)
            self._models[name.key] = model
            if existing is not None:
                old = {layer.digest for layer in existing.layers} | {existing.config_digest}
                self._prune(old)

    def _get(self, name: _Name) -> StoredModel | None:
        with self._lock:
            return self._models.get(name.key)

    def _capabilities(self, model: StoredModel) -> list[str]:
        if model.family in ("bert", "nomic-bert", "nomic-bert-moe"):
            return ["embedding"]
        caps = ["completion"]
        if ".Tools" in model.template:
            caps.append("tools")
        if ".Suffix" in model.template:
            caps.append("insert")
        return caps

    def _purge_loaded(self) -> None:
        now = time.time_ns()
        for key, (expires, _ctx) in list(self._loaded.items()):
            if expires < now or key not in self._models:
                del self._loaded[key]

    def _default_num_ctx(self) -> int:
        return 2048 if _version_tuple(self.version) < (0, 6, 7) else 4096

    # -- request handling ---------------------------------------------------------------------

    def _handle(self, ex: _Exchange) -> None:
        if ex.path.startswith(_BLOB_PREFIX) and ex.method == "POST":
            # Blob bodies are streamed, never kept: record the size once the body is read,
            # just before the response goes out (so a client that got its answer sees it).
            recorded = False

            def record() -> None:
                nonlocal recorded
                if not recorded:
                    recorded = True
                    entry = RecordedRequest(ex.method, ex.path, None, ex.headers, ex.body.total)
                    with self._lock:
                        self.requests.append(entry)

            ex.before_response = record
            try:
                self._route(ex)
            finally:
                record()
            return
        raw = ex.raw_body = ex.body.read_all()
        body_json: Any = None
        if raw.strip():
            with contextlib.suppress(_GoJSONError, ValueError):
                parsed = _go_loads(raw)
                body_json = None if parsed is _MISSING else parsed
        with self._lock:
            self.requests.append(RecordedRequest(ex.method, ex.path, body_json, ex.headers))
        self._route(ex)

    def _route(self, ex: _Exchange) -> None:
        path = ex.path
        if not _host_allowed(ex.headers.get("host", "")):
            ex.send(403)
            return
        if ex.method == "OPTIONS":  # a CORS preflight from an allowed host
            ex.send(204)
            return
        if path.startswith(_BLOB_PREFIX):
            digest = path[len(_BLOB_PREFIX) :]
            allowed = ("HEAD", "POST") if digest and "/" not in digest else None
        else:
            allowed = _ROUTES.get(path)
        if allowed is None:
            ex.send(404, b"404 page not found", _CT_TEXT_BARE)
            return
        if ex.method not in allowed:
            ex.send(405, b"405 method not allowed", _CT_TEXT_BARE)
            return
        ex.faults = self._take_faults(path)
        slow = ex.faults.pop("slow", None)
        if slow is not None:
            ex.sleep(slow.seconds)
        before = ex.faults.pop("fail_before", None)
        if before is not None:
            ex.send_error(before.status, before.message)
            return
        if path.startswith(_BLOB_PREFIX):
            self._h_blob(ex, path[len(_BLOB_PREFIX) :])
            return
        handler = {
            "/": self._h_root,
            "/api/version": self._h_version,
            "/api/tags": self._h_tags,
            "/api/ps": self._h_ps,
            "/api/show": self._h_show,
            "/api/delete": self._h_delete,
            "/api/copy": self._h_copy,
            "/api/pull": self._h_pull,
            "/api/push": self._h_unsupported,
            "/api/create": self._h_create,
            "/api/generate": self._h_generate,
            "/api/chat": self._h_chat,
            "/api/embed": self._h_unsupported,
            "/api/embeddings": self._h_unsupported,
        }[path]
        handler(ex)

    def _decode(self, ex: _Exchange, struct_name: str) -> dict[str, Any] | None:
        """ShouldBindJSON: the typed body, or None after answering 400."""
        raw = ex.raw_body
        try:
            value = _go_loads(raw)
        except _GoJSONError as exc:
            ex.send_error(400, str(exc))
            return None
        if value is _MISSING:
            ex.send_error(400, "missing request body")
            return None
        out, error = _go_unmarshal_struct(value, struct_name)
        if error is None and out is not None:
            # Custom unmarshalers: api.Duration and api.ThinkValue.
            if "keep_alive" in _STRUCTS[struct_name]:
                try:
                    out["keep_alive"] = _parse_keep_alive(out.get("keep_alive"))
                except ValueError as exc:
                    error = str(exc)
            if error is None and "think" in _STRUCTS[struct_name]:
                error = _check_think(out.get("think"))
        if error is not None or out is None:
            ex.send_error(400, error or "invalid request")
            return None
        return out

    # -- simple endpoints --------------------------------------------------------------------

    def _h_root(self, ex: _Exchange) -> None:
        ex.send(200, b"Ollama is running", _CT_TEXT)

    def _h_version(self, ex: _Exchange) -> None:
        ex.send_json(200, {"version": self.version})

    def _h_unsupported(self, ex: _Exchange) -> None:
        ex.send_error(501, f"{ex.path} is not implemented by the Ollama stand-in")

    def _details(self, model: StoredModel, *, listing: bool, parent: bool = True) -> dict[str, Any]:
        details: dict[str, Any] = {
            "parent_model": model.parent_model if parent else "",
            "format": model.format,
            "family": model.family,
            "families": [model.family],
            "parameter_size": model.parameter_size,
            "quantization_level": model.quantization_level,
        }
        if listing:
            if model.info("context_length"):
                details["context_length"] = model.info("context_length")
            if model.info("embedding_length"):
                details["embedding_length"] = model.info("embedding_length")
        return details

    def _h_tags(self, ex: _Exchange) -> None:
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: m.modified_at_ns, reverse=True)
            listing = [
                {
                    "name": m.name,
                    "model": m.name,
                    "modified_at": _rfc3339(m.modified_at_ns),
                    "size": m.size,
                    "digest": m.digest,
                    "details": self._details(m, listing=True),
                    "capabilities": self._capabilities(m),
                }
                for m in models
            ]
        ex.send_json(200, {"models": listing})

    def _h_ps(self, ex: _Exchange) -> None:
        with self._lock:
            self._purge_loaded()
            entries = []
            for key, (expires, context) in self._loaded.items():
                m = self._models[key]
                entry: dict[str, Any] = {
                    "name": m.name,
                    "model": m.name,
                    "size": m.size,
                    "digest": m.digest,
                    "details": self._details(m, listing=False, parent=False),
                    "expires_at": _rfc3339(expires),
                    "size_vram": 0,
                }
                if _version_tuple(self.version) >= (0, 10, 0):
                    entry["context_length"] = context
                entries.append((expires, entry))
        entries.sort(key=lambda item: item[0], reverse=True)
        ex.send_json(200, {"models": [entry for _, entry in entries]})

    def _h_show(self, ex: _Exchange) -> None:
        req = self._decode(ex, "ShowRequest")
        if req is None:
            return
        requested = req.get("name") or req.get("model") or ""
        if not requested:
            ex.send_error(400, "model is required")
            return
        name = _parse_name(requested)
        if name is None:
            ex.send_error(400, "invalid model name")
            return
        with self._lock:
            stored = self._models.get(name.key)
            model = copy.deepcopy(stored) if stored else None
        if model is None:
            ex.send_error(404, f"model '{name.short()}' not found")
            return
        if req.get("system"):
            model.system = req["system"]
        ex.send_json(
            200,
            self._show_response(
                model, verbose=bool(req.get("verbose")), options=req.get("options") or {}
            ),
        )

    def _show_response(
        self, model: StoredModel, *, verbose: bool, options: dict[str, Any]
    ) -> dict[str, Any]:
        version = _version_tuple(self.version)
        params = []
        for key, value in model.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                params.append(f"{key:<30} {_go_value(item, sharp=True)}")
        resp: dict[str, Any] = {}
        if model.licenses:
            resp["license"] = model.license
        resp["modelfile"] = self._modelfile(model, {**model.parameters, **options})
        if params:
            resp["parameters"] = "\n".join(params)
        if model.template:
            resp["template"] = model.template
        if model.system:
            resp["system"] = model.system
        resp["details"] = self._details(model, listing=False)
        if model.messages:
            resp["messages"] = model.messages
        info = dict(model.model_info)
        if verbose:
            vocab = int(info.get(f"{model.family}.vocab_size") or 0)
            for key in (
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.scores",
            ):
                if key in info and info[key] is None:
                    info[key] = (
                        [f"<t{i}>" for i in range(vocab)] if key.endswith("tokens") else [1] * vocab
                    )
        resp["model_info"] = dict(sorted(info.items()))
        if version >= (0, 6, 1) and model.format == "gguf" and model.tensors:
            resp["tensors"] = model.tensors
        if version >= (0, 6, 4):
            resp["capabilities"] = self._capabilities(model)
        resp["modified_at"] = _rfc3339(model.modified_at_ns)
        return resp

    def _modelfile(self, model: StoredModel, options: dict[str, Any]) -> str:
        lines = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {model.name}",
            "",
        ]
        model_layer = next((layer for layer in model.layers if layer.media_type == _MT_MODEL), None)
        if model_layer is not None:
            lines.append(f"FROM {self._blob_file(model_layer.digest)}")
        for digest in model.adapters:
            lines.append(f"ADAPTER {_mf_quote(str(self._blob_file(digest)))}")
        if model.template:
            lines.append(f"TEMPLATE {_mf_quote(model.template)}")
        if model.system:
            lines.append(f"SYSTEM {_mf_quote(model.system)}")
        for key, value in options.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {key} {_mf_quote(_go_value(item, sharp=False))}")
        for text in model.licenses:
            lines.append(f"LICENSE {_mf_quote(text)}")
        for message in model.messages:
            lines.append(
                f"MESSAGE {message.get('role', '')} {_mf_quote(message.get('content', ''))}"
            )
        return "\n".join(lines) + "\n"

    def _h_delete(self, ex: _Exchange) -> None:
        req = self._decode(ex, "DeleteRequest")
        if req is None:
            return
        requested = req.get("model") or req.get("name") or ""
        if not requested:
            ex.send_error(400, "model is required")
            return
        name = _parse_name(requested)
        if name is None:
            ex.send_error(400, f"name {_go_quote(requested)} is invalid")
            return
        with self._lock:
            model = self._models.pop(name.key, None)
            if model is not None:
                self._loaded.pop(name.key, None)
                self._prune({layer.digest for layer in model.layers} | {model.config_digest})
        if model is None:
            ex.send_error(404, f"model '{requested}' not found")
            return
        ex.send(200)

    def _h_copy(self, ex: _Exchange) -> None:
        req = self._decode(ex, "CopyRequest")
        if req is None:
            return
        source, destination = req.get("source") or "", req.get("destination") or ""
        src = _parse_name(source)
        if src is None:
            ex.send_error(400, f"source {_go_quote(source)} is invalid")
            return
        dst = _parse_name(destination)
        if dst is None:
            ex.send_error(400, f"destination {_go_quote(destination)} is invalid")
            return
        with self._lock:
            model = self._models.get(src.key)
            if model is not None:
                clone = copy.deepcopy(model)
                existing = self._models.get(dst.key)
                clone.name = existing.name if existing else dst.short()
                clone.modified_at_ns = time.time_ns()
                self._models[dst.key] = clone
        if model is None:
            ex.send_error(404, f"model {_go_quote(source)} not found")
            return
        ex.send(200)

    # -- blobs -------------------------------------------------------------------------------

    def _h_blob(self, ex: _Exchange, digest: str) -> None:
        if not _DIGEST_RE.match(digest):
            ex.send_error(400, "invalid digest format")
            return
        path = self._blob_file(digest)
        if ex.method == "HEAD":
            if path.is_file():
                ex.send(200)
            else:
                ex.send_error(404, f"blob {_go_quote(digest)} not found")
            return
        if path.is_file():
            ex.send(200)  # send() drains the body first, which keeps any client happy
            return
        hasher = hashlib.sha256()
        tmp = self.blobs_dir / f"upload-{threading.get_ident()}-{time.time_ns()}.partial"
        try:
            with tmp.open("wb") as out:
                while chunk := ex.body.read(1 << 20):
                    hasher.update(chunk)
                    out.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            final = self._blob_file(actual)
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)  # NewLayer stores the blob under its real digest first
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if actual != digest:
            ex.send_error(
                400, f"digest mismatch, expected {_go_quote(digest)}, got {_go_quote(actual)}"
            )
            return
        ex.send(201)

    # -- pull --------------------------------------------------------------------------------

    def _h_pull(self, ex: _Exchange) -> None:
        req = self._decode(ex, "PullRequest")
        if req is None:
            return
        name = _parse_name(req.get("model") or req.get("name") or "")
        if name is None:
            ex.send_error(400, "invalid model name")
            return
        ex.run_events(
            self._pull_events(ex, name),
            stream=req.get("stream") is not False,
            aggregate=lambda events: events[-1] if events else {"status": "success"},
            ok_type=_CT_JSON_BARE,
            err_type=_CT_JSON_BARE,
        )

    def _pull_events(self, ex: _Exchange, name: _Name) -> Iterator[Any]:
        yield {"status": "pulling manifest"}
        ex.sleep(self.pull_chunk_delay)
        with self._lock:
            entry = self._registry.get(name.key)
        if entry is None:
            yield _Err("pull model manifest: file does not exist")
            return
        template, blobs = entry
        steps = self.pull_steps
        progress: list[list[dict[str, Any]]] = []
        for layer in template.layers:
            status = f"pulling {layer.digest[7:19]}"
            if self.blob_path(layer.digest) is not None:
                progress.append(
                    [
                        {
                            "status": status,
                            "digest": layer.digest,
                            "total": layer.size,
                            "completed": layer.size,
                        }
                    ]
                )
                continue
            lines: list[dict[str, Any]] = [
                {"status": status, "digest": layer.digest, "total": layer.size}
            ]
            for step in range(1, steps + 1):
                completed = layer.size * step // steps
                lines.append(
                    {
                        "status": status,
                        "digest": layer.digest,
                        "total": layer.size,
                        "completed": completed,
                    }
                )
            progress.append(lines)
        # Layers download in parallel: interleave their progress lines.
        for round_lines in _round_robin(progress):
            yield round_lines
            ex.sleep(self.pull_chunk_delay)
        for digest, data in blobs.items():
            if self.blob_path(digest) is None:
                self._put_blob(data)
        yield {"status": "verifying sha256 digest"}
        with self._lock:
            old = self._models.get(name.key)
        removed = old is not None and bool(
            {layer.digest for layer in old.layers} - {layer.digest for layer in template.layers}
        )
        yield {"status": "writing manifest"}
        pulled = copy.deepcopy(template)
        yield _Commit(lambda: self._store(pulled, name))
        if removed:
            yield {"status": "removing unused layers"}
        yield {"status": "success"}

    # -- create ------------------------------------------------------------------------------

    def _h_create(self, ex: _Exchange) -> None:
        req = self._decode(ex, "CreateRequest")
        if req is None:
            return
        if _version_tuple(self.version) < (0, 5, 5):
            req = self._old_style_create(ex, req)
            if req is None:
                return
        name = _parse_name(req.get("model") or req.get("name") or "")
        if name is None:
            ex.send_error(400, "invalid model name")
            return
        for key in ("files", "adapters"):
            for filename, digest in (req.get(key) or {}).items():
                if not _fs_valid_path(filename):
                    ex.send_error(400, f"file path must be relative: {filename}")
                    return
                if not digest or not _DIGEST_RE.match(digest):
                    ex.send_error(400, "invalid digest format")
                    return
        license_value = req.get("license")
        if license_value is not None and not (
            isinstance(license_value, str)
            or (isinstance(license_value, list) and all(isinstance(x, str) for x in license_value))
        ):
            ex.send_error(400, f"unknown license type: {_go_type_name(license_value)}")
            return
        ex.run_events(
            self._create_events(ex, req, name),
            stream=req.get("stream") is not False,
            aggregate=lambda events: events[-1] if events else {"status": "success"},
            ok_type=_CT_JSON_BARE,
            err_type=_CT_JSON_BARE,
        )

    def _create_events(self, ex: _Exchange, req: dict[str, Any], name: _Name) -> Iterator[Any]:
        from_text = req.get("from") or ""
        files = req.get("files")
        adapters = req.get("adapters")
        draft: StoredModel | None
        if from_text:
            source = _parse_name(from_text)
            if source is None:
                yield _Err("invalid model name", 400)
                return
            base = self._get(source)
            if base is None:
                yield from self._pull_events(ex, source)
                base = self._get(source)
                if base is None:  # pragma: no cover - the pull yielded its error
                    return
            with self._lock:
                draft = copy.deepcopy(base)
            draft.parent_model = source.short()
        elif files is not None:
            draft = yield from self._convert_files(files)
            if draft is None:
                return
        else:
            yield _Err("neither 'from' or 'files' was specified", 400)
            return
        if adapters is not None:
            ok = yield from self._convert_adapters(adapters, draft)
            if not ok:
                return
        ok = yield from self._finish_create(ex, req, draft)
        if not ok:
            return
        yield {"status": "writing manifest"}
        yield _Commit(lambda: self._store(draft, name))
        yield {"status": "success"}

    def _detect_type(self, files: dict[str, str]) -> str:
        """detectModelTypeFromFiles: "safetensors", "gguf", "mixed" or ""."""
        kinds = set()
        for filename, digest in files.items():
            if filename.endswith(".safetensors"):
                kinds.add("safetensors")
            elif filename.endswith(".gguf") or _is_gguf_blob(self._blob_file(digest)):
                kinds.add("gguf")
        if len(kinds) > 1:
            return "mixed"  # DEVIATION: see the module docstring
        return kinds.pop() if kinds else ""

    def _missing_blob(self, files: dict[str, str], status: int) -> _Err | None:
        for digest in files.values():
            path = self._blob_file(digest)
            if not path.is_file():
                return _Err(f"open {path}: no such file or directory", status)
        return None

    def _convert_files(self, files: dict[str, str]) -> Iterator[Any]:
        """The model of a `files` import (GGUF or safetensors), or None after an error event."""
        kind = self._detect_type(files)
        if kind == "mixed":
            yield _Err("mixed model file types", 400)
            return None
        if kind == "gguf":
            return (yield from self._import_gguf(files))
        if kind == "safetensors":
            return (yield from self._import_safetensors(files))
        yield _Err("unknown type", 400)
        return None

    def _import_gguf(self, files: dict[str, str]) -> Iterator[Any]:
        yield {"status": "parsing GGUF"}
        missing = self._missing_blob(files, 500)
        if missing:
            yield missing
            return None
        parsed: list[tuple[str, _GGUF, Path]] = []
        for digest in files.values():
            path = self._blob_file(digest)
            try:
                parsed.append((digest, _read_gguf(path), path))
            except _FormatError as exc:
                yield _Err(str(exc))
                return None
        digest, gguf, path = parsed[0]
        model = _model_from_gguf(gguf)
        model.files = dict(files)
        model.layers = [Layer(_MT_MODEL, d.lower(), p.stat().st_size) for d, _g, p in parsed]
        yield {"status": "verifying conversion"}
        return model

    def _import_safetensors(self, files: dict[str, str]) -> Iterator[Any]:
        yield {"status": "converting model"}
        missing = self._missing_blob(files, 500)
        if missing:
            yield missing
            return None
        if "config.json" not in files:
            yield _Err("open config.json: no such file or directory")
            return None
        try:
            config = _go_loads(self._blob_file(files["config.json"]).read_bytes(), decoder=False)
        except _GoJSONError as exc:
            yield _Err(str(exc))
            return None
        typed, error = _go_unmarshal_struct(config, "ModelParameters")
        if error or typed is None:
            yield _Err(error or "invalid config.json")
            return None
        architectures = typed.get("architectures") or []
        if not architectures:
            yield _Err("unknown architecture")
            return None
        family = _HF_ARCHITECTURES.get(architectures[0])
        if architectures[0] == "MistralForCausalLM" and _version_tuple(self.version) < (0, 6, 5):
            family = "llama"
        if family is None:
            yield _Err(f"unsupported architecture {_go_quote(architectures[0])}")
            return None
        if "tokenizer.model" not in files and "tokenizer.json" not in files:
            yield _Err("unknown tokenizer format")
            return None
        tensor_files = sorted(
            k for k in files if "/" not in k and fnmatch.fnmatch(k, "*.safetensors")
        )
        if not tensor_files:
            yield _Err("unknown tensor format")
            return None
        parameter_count = 0
        for key in tensor_files:
            try:
                header = _read_safetensors_header(self._blob_file(files[key]))
            except _FormatError as exc:
                yield _Err(str(exc))
                return None
            for entry in header.values():
                count = 1
                for dim in entry["shape"]:
                    count *= int(dim)
                parameter_count += count
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

        def dim(key: str, default: int = 0) -> int:
            value = config.get(key, text.get(key, default))
            return (
                int(value)
                if isinstance(value, int | float) and not isinstance(value, bool)
                else default
            )

        heads = dim("num_attention_heads")
        info = _synthetic_model_info(
            family=family,
            parameter_count=parameter_count,
            file_type=1,
            context_length=dim("max_position_embeddings"),
            embedding_length=dim("hidden_size"),
            block_count=dim("num_hidden_layers"),
            head_count=heads,
            head_count_kv=dim("num_key_value_heads", heads),
            vocab_size=dim("vocab_size"),
            feed_forward_length=dim("intermediate_size") or None,
        )
        content = b"GGUF" + _go_json({"converted safetensors": files, "model_info": info})
        model = StoredModel(
            name="",
            family=family,
            quantization_level="F16",
            model_info=info,
            parameter_size=_human_number(parameter_count),
            files=dict(files),
            layers=[Layer(_MT_MODEL, self._put_blob(content), parameter_count * 2)],
            tensors=_synthetic_tensors(info, family, "F16"),
        )
        yield {"status": "verifying conversion"}
        return model

    def _convert_adapters(self, adapters: dict[str, str], draft: StoredModel) -> Iterator[Any]:
        """Append the adapter layer to `draft`; False after an error event (all errors are 400)."""
        kind = self._detect_type(adapters)
        if kind == "mixed":
            yield _Err("mixed model file types", 400)
            return False
        if kind == "gguf":
            if len(adapters) > 1:
                yield _Err("only one adapter is currently supported", 400)
                return False
            yield {"status": "parsing GGUF"}
            missing = self._missing_blob(adapters, 400)
            if missing:
                yield missing
                return False
            digest = next(iter(adapters.values()))
            path = self._blob_file(digest)
            try:
                _read_gguf(path)
            except _FormatError as exc:
                yield _Err(str(exc), 400)
                return False
            draft.layers.append(Layer(_MT_ADAPTER, digest.lower(), path.stat().st_size))
            draft.adapter_files = dict(adapters)
            return True
        if kind != "safetensors":
            yield _Err("unknown type", 400)
            return False
        yield {"status": "converting adapter"}
        missing = self._missing_blob(adapters, 400)
        if missing:
            yield missing
            return False
        if "adapter_config.json" not in adapters:
            yield _Err("open adapter_config.json: no such file or directory", 400)
            return False
        raw = self._blob_file(adapters["adapter_config.json"]).read_bytes()
        try:
            config = _go_loads(raw, decoder=False)
        except _GoJSONError as exc:
            yield _Err(str(exc), 400)
            return False
        typed, error = _go_unmarshal_struct(config, "AdapterParameters")
        if error or typed is None:
            yield _Err(error or "invalid adapter_config.json", 400)
            return False
        if draft.family not in _ADAPTER_ARCHITECTURES:
            yield _Err("unsupported architecture", 400)
            return False
        tensor_files = sorted(
            k for k in adapters if "/" not in k and fnmatch.fnmatch(k, "*.safetensors")
        )
        if not tensor_files:
            yield _Err("unknown tensor format", 400)
            return False
        tensors: dict[str, list[int]] = {}
        for key in tensor_files:
            try:
                header = _read_safetensors_header(self._blob_file(adapters[key]))
            except _FormatError as exc:
                yield _Err(str(exc), 400)
                return False
            tensors.update({n: [int(d) for d in e["shape"]] for n, e in header.items()})
        problem = _adapter_shape_problem(tensors, draft)
        if problem:
            yield _Err(problem, 400)  # DEVIATION: a real server accepts it and fails at load
            return False
        lora_parameters = typed.get("lora_parameters") or {}
        alpha = lora_parameters.get("alpha") or typed.get("lora_alpha") or 0
        content = b"GGUF" + _go_json(
            {"converted adapter": adapters, "base": draft.digest, "adapter.lora.alpha": alpha}
        )
        elements = sum(_product(shape) for shape in tensors.values())
        draft.layers.append(Layer(_MT_ADAPTER, self._put_blob(content), elements * 2))
        draft.adapter_files = dict(adapters)
        return True

    def _finish_create(
        self, ex: _Exchange, req: dict[str, Any], draft: StoredModel
    ) -> Iterator[Any]:
        """createModel: quantize, template, system, license, params, messages, layer statuses."""
        quantize = (req.get("quantize") or req.get("quantization") or "").upper()
        if quantize:
            if quantize not in _QUANTIZE_TYPES:
                yield _Err(
                    f"unsupported quantization type {quantize} - supported types are "
                    + ", ".join(_QUANTIZE_TYPES)
                )
                return False
            current = draft.quantization_level
            if current not in ("F16", "BF16", "F32"):
                yield _Err("quantization is only supported for F16, BF16 and F32 models")
                return False
            if current != quantize:
                index = next(
                    i for i, layer in enumerate(draft.layers) if layer.media_type == _MT_MODEL
                )
                old = draft.layers[index]
                total = old.size
                for step in range(1, 5):
                    yield {
                        "status": f"quantizing {current} model to {quantize}",
                        "digest": "0000000000000000000",
                        "total": total,
                        "completed": total * step // 4,
                    }
                yield {"status": "verifying conversion"}
                content = b"GGUF" + f"stand-in {quantize} of {old.digest}".encode()
                new_size = int(total * _BITS[quantize] / _BITS[current])
                draft.layers[index] = Layer(_MT_MODEL, self._put_blob(content), new_size)
                draft.quantization_level = quantize
                draft.model_info["general.file_type"] = _FILE_TYPES[quantize]
                draft.tensors = _synthetic_tensors(draft.model_info, draft.family, quantize)
        template = req.get("template") or ""
        if template:
            problem = _check_template(template)
            if problem:
                yield _Err(f"template error: {problem}", 400)
                return False
            draft.template = template
            self._replace_layer(draft, _MT_TEMPLATE, template.encode())
        if req.get("system"):
            draft.system = req["system"]
            self._replace_layer(draft, _MT_SYSTEM, draft.system.encode())
        license_value = req.get("license")
        licenses = [license_value] if isinstance(license_value, str) else list(license_value or [])
        for text in licenses:
            if text:
                draft.licenses.append(text)
                draft.layers.append(
                    Layer(_MT_LICENSE, self._put_blob(text.encode()), len(text.encode()))
                )
        parameters = req.get("parameters")
        if parameters is not None:
            merged = {**draft.parameters, **parameters}
            if merged:
                draft.parameters = dict(sorted(merged.items()))
                self._replace_layer(
                    draft, _MT_PARAMS, json.dumps(draft.parameters, sort_keys=True).encode() + b"\n"
                )
        messages = req.get("messages") or []
        if messages:
            draft.messages = [
                {"role": (m.get("role") or "").lower(), "content": m.get("content") or ""}
                for m in messages
            ]
            self._replace_layer(draft, _MT_MESSAGES, _go_json(draft.messages))
        if not any(layer.media_type == _MT_TEMPLATE for layer in draft.layers):
            draft.template = draft.template or "{{ .Prompt }}"
        used = self._referenced_digests()
        for layer in draft.layers:
            verb = "using existing layer" if layer.digest in used else "creating new layer"
            yield {"status": f"{verb} {layer.digest}"}
        return True

    def _replace_layer(self, draft: StoredModel, media_type: str, data: bytes) -> None:
        draft.layers = [layer for layer in draft.layers if layer.media_type != media_type]
        draft.layers.append(Layer(media_type, self._put_blob(data), len(data)))

    def _old_style_create(self, ex: _Exchange, req: dict[str, Any]) -> dict[str, Any] | None:
        """≤ v0.5.4: the request is a Modelfile; turn it into the new-style fields."""
        text = req.get("modelfile") or ""
        if not text and req.get("path"):
            try:
                text = Path(req["path"]).read_text()
            except OSError as exc:
                ex.send_error(
                    400, f"open {req['path']}: {exc.strerror.lower() if exc.strerror else exc}"
                )
                return None
        if not text:
            ex.send_error(400, "path or Modelfile are required")
            return None
        try:
            commands = _parse_modelfile(text)
        except ValueError as exc:
            ex.send_error(400, str(exc))
            return None
        out: dict[str, Any] = {
            "model": req.get("model") or req.get("name") or "",
            "stream": req.get("stream"),
        }
        if req.get("quantize") or req.get("quantization"):
            out["quantize"] = req.get("quantize") or req.get("quantization")
        params: dict[str, Any] = {}
        for command, args in commands:
            if command in ("from", "adapter"):
                if args.startswith("@"):
                    mapping = self._old_style_blob(args[1:])
                    if mapping is None:
                        ex.send_error(400, f"invalid blob reference: {args}")
                        return None
                    out["files" if command == "from" else "adapters"] = mapping
                elif command == "from":
                    out["from"] = args
                else:
                    ex.send_error(400, f"the stand-in needs ADAPTER @<digest>, got {args}")
                    return None
            elif command in ("template", "system"):
                out[command] = args
            elif command == "license":
                out.setdefault("license", []).append(args)
            elif command == "message":
                role, _, content = args.partition(" ")
                out.setdefault("messages", []).append({"role": role, "content": content})
            else:
                kind = _OPTION_KINDS.get(command)
                try:
                    value: Any = args
                    if kind == "int":
                        value = int(args)
                    elif kind == "float":
                        value = float(args)
                    elif kind == "boolptr":
                        value = args.lower() in ("1", "t", "true")
                except ValueError:
                    ex.send_error(400, f"invalid value for {command}: {args}")
                    return None
                if kind == "slice":
                    params.setdefault(command, []).append(value)
                else:
                    params[command] = value
        if params:
            out["parameters"] = params
        return out

    def _old_style_blob(self, digest: str) -> dict[str, str] | None:
        path = self._blob_file(digest)
        if not path.is_file():
            return {"model.gguf": digest}  # the create reports the missing blob
        if zipfile.is_zipfile(path):
            mapping = {}
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        mapping[member.filename] = self._put_blob(archive.read(member))
            return mapping
        return {"model.gguf": digest}

    # -- generate and chat ---------------------------------------------------------------------

    def _h_generate(self, ex: _Exchange) -> None:
        self._generate(ex, chat=False)

    def _h_chat(self, ex: _Exchange) -> None:
        self._generate(ex, chat=True)

    def _generate(self, ex: _Exchange, *, chat: bool) -> None:
        req = self._decode(ex, "ChatRequest" if chat else "GenerateRequest")
        if req is None:
            return
        requested = req.get("model") or ""
        name = _parse_name(requested)
        if name is None:
            if chat:
                ex.send_error(400, "model is required")
            else:
                ex.send_error(404, f"model '{requested}' not found")
            return
        with self._lock:
            stored = self._models.get(name.key)
            model = copy.deepcopy(stored) if stored else None
        if model is None:
            ex.send_error(404, f"model '{requested}' not found")
            return
        top_logprobs = req.get("top_logprobs") or 0
        if not 0 <= top_logprobs <= 20:
            ex.send_error(400, "top_logprobs must be between 0 and 20")
            return
        keep_alive = req.get("keep_alive")
        messages = [dict(m) for m in (req.get("messages") or [])] if chat else []
        prompt = "" if chat else (req.get("prompt") or "")
        empty = not messages if chat else not prompt
        now = time.time_ns()
        if empty and keep_alive == 0:
            with self._lock:
                self._loaded.pop(name.key, None)
            ex.send_json(200, self._final_stub(requested, chat, "unload"))
            return
        if (
            not chat
            and req.get("raw")
            and (req.get("template") or req.get("system") or req.get("context"))
        ):
            ex.send_error(400, "raw mode does not support template, system, or context")
            return
        caps = self._capabilities(model)
        if not chat and req.get("suffix") and "insert" not in caps:
            ex.send_error(400, f"{name.full()} does not support insert")
            return
        if chat and req.get("tools") and "tools" not in caps:
            ex.send_error(400, f"{name.full()} does not support tools")
            return
        think = req.get("think")
        if (
            think not in (None, False)
            and _version_tuple(self.version) >= (0, 9, 0)
            and "thinking" not in caps
        ):
            ex.send_error(400, f"{_go_quote(requested)} does not support thinking")
            return
        options = {**model.parameters, **(req.get("options") or {})}
        problem = _check_options(options)
        if problem:
            ex.send_error(500, problem)
            return
        num_ctx = options.get("num_ctx")
        num_ctx = int(num_ctx) if num_ctx and num_ctx > 0 else self._default_num_ctx()
        trained = int(model.info("context_length") or 0)
        n_ctx = min(num_ctx, trained) if trained else num_ctx
        with self._lock:
            was_loaded = name.key in self._loaded
            expires = now + (
                _MAX_INT64 if keep_alive == _FOREVER else (keep_alive or 300_000_000_000)
            )
            self._loaded[name.key] = (expires, n_ctx)
        loaded_ns = time.perf_counter_ns()
        load_duration = max(loaded_ns - ex.arrived_ns, 1) + (0 if was_loaded else 1_000)
        if empty:
            ex.send_json(200, self._final_stub(requested, chat, "load"))
            return

        # Render (approximately) and count the prompt.
        template = (req.get("template") or model.template) if not chat else model.template
        literal = "" if req.get("raw") else _template_literal(template)
        if chat:
            for message in messages:
                message["role"] = (message.get("role") or "").lower()
            conversation = [dict(m) for m in model.messages] + messages
            if model.system and not (messages and messages[0]["role"] == "system"):
                conversation.insert(0, {"role": "system", "content": model.system})
            user_turns = [m for m in conversation if m.get("role") == "user"]
            reply_input = (user_turns[-1].get("content") or "") if user_turns else ""
            prompt_words = _words(literal) + [
                w for m in conversation for w in _words(m.get("content") or "")
            ]
            key_text = json.dumps(conversation, sort_keys=True)
        else:
            system = "" if req.get("raw") else (req.get("system") or model.system)
            reply_input = prompt
            prompt_words = _words(literal) + _words(system) + _words(prompt)
            key_text = json.dumps([system, prompt, req.get("suffix") or ""])
        context_in = [int(t) for t in (req.get("context") or [])]
        count = len(prompt_words) + len(context_in)
        if req.get("truncate") is False and count > n_ctx:
            inner = {
                "error": {
                    "code": 400,
                    "message": (
                        f"request ({count} tokens) exceeds the available context size "
                        f"({n_ctx} tokens), try increasing it"
                    ),
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": count,
                    "n_ctx": n_ctx,
                }
            }
            ex.send_error(400, json.dumps(inner, separators=(",", ":")))
            return
        prompt_eval_count = min(count, n_ctx)

        reply_rule = self._replies.get(name.key)
        seed = options.get("seed", -1)
        if reply_rule is None:
            reply = _default_reply(
                model.digest, key_text, seed, json_format=req.get("format") is not None
            )
        elif callable(reply_rule):
            reply = str(reply_rule(reply_input))
        else:
            reply = reply_rule
        done_reason = "stop"
        for stop in options.get("stop") or []:
            if stop and stop in reply:
                reply = reply[: reply.index(stop)]
        tokens = re.findall(r"\s*\S+\s*", reply)
        num_predict = options.get("num_predict")
        if (
            isinstance(num_predict, int | float)
            and num_predict > 0
            and len(tokens) >= int(num_predict)
        ):
            tokens = tokens[: int(num_predict)]
            done_reason = "length"
        prompt_eval_ns = max(time.perf_counter_ns() - loaded_ns, 1)
        vocab = int(model.info("vocab_size") or 32000) or 32000
        context_out = (
            context_in
            + [_token_id(w, vocab) for w in prompt_words]
            + [_token_id(t, vocab) for t in tokens]
        )

        def events() -> Iterator[Any]:
            started = time.perf_counter_ns()
            for index, token in enumerate(tokens):
                if index and self.token_delay:
                    ex.sleep(self.token_delay)
                line: dict[str, Any] = {"model": requested, "created_at": _rfc3339(time.time_ns())}
                if chat:
                    line["message"] = {"role": "assistant", "content": token}
                else:
                    line["response"] = token
                line["done"] = False
                yield line
            eval_ns = max(time.perf_counter_ns() - started, 1)
            final: dict[str, Any] = {"model": requested, "created_at": _rfc3339(time.time_ns())}
            if chat:
                final["message"] = {"role": "assistant", "content": ""}
            else:
                final["response"] = ""
            final["done"] = True
            final["done_reason"] = done_reason
            if not chat and not req.get("raw"):
                final["context"] = context_out
            final["total_duration"] = max(time.perf_counter_ns() - ex.arrived_ns, 1)
            final["load_duration"] = load_duration
            if prompt_eval_count:
                final["prompt_eval_count"] = prompt_eval_count
            final["prompt_eval_duration"] = prompt_eval_ns
            if tokens:
                final["eval_count"] = len(tokens)
            final["eval_duration"] = eval_ns
            if keep_alive == 0:
                yield _Commit(lambda: self._unload(name.key))
            yield final

        def aggregate(lines: list[dict[str, Any]]) -> dict[str, Any]:
            final = dict(lines[-1])
            text = "".join(
                (line["message"]["content"] if chat else line["response"]) for line in lines[:-1]
            )
            if chat:
                final["message"] = {"role": "assistant", "content": text}
            else:
                final["response"] = text
            return final

        ex.run_events(
            events(),
            stream=req.get("stream") is not False,
            aggregate=aggregate,
            ok_type=_CT_JSON,
            err_type=_CT_JSON,
        )

    def _unload(self, key: str) -> None:
        with self._lock:
            self._loaded.pop(key, None)

    def _final_stub(self, requested: str, chat: bool, reason: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": requested, "created_at": _rfc3339(time.time_ns())}
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        out["done"] = True
        out["done_reason"] = reason
        return out


# ---------------------------------------------------------------------------------------------
# Helpers of the stand-in
# ---------------------------------------------------------------------------------------------


def _round_robin(groups: list[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    index = 0
    while any(index < len(group) for group in groups):
        for group in groups:
            if index < len(group):
                yield group[index]
        index += 1


def _product(shape: Sequence[int]) -> int:
    out = 1
    for dim in shape:
        out *= int(dim)
    return out


def _token_id(word: str, vocab: int) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % vocab


def _default_reply(digest: str, key_text: str, seed: Any, *, json_format: bool) -> str:
    """A few words, fixed by the model's digest, the prompt and the seed."""
    hashed = hashlib.sha256(f"{digest}\x00{key_text}\x00{seed}".encode()).digest()
    count = 4 + hashed[0] % 9
    words = [_WORDS[hashed[1 + i] % len(_WORDS)] for i in range(count)]
    sentence = " ".join(words).capitalize() + "."
    if json_format:
        return json.dumps({"answer": sentence})
    return sentence


def _mf_quote(text: str) -> str:
    """parser.quote: how `ollama show` quotes Modelfile arguments."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


_MODELFILE_COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)


def _parse_modelfile(text: str) -> list[tuple[str, str]]:
    """A small parser.ParseFile: [(command, args)], PARAMETER as (key, value)."""
    commands: list[tuple[str, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        command = word.lower()
        if command not in _MODELFILE_COMMANDS:
            raise ValueError(
                f"(line {index}): command must be one of "
                + ", ".join(f'"{c}"' for c in _MODELFILE_COMMANDS[:-1])
                + f', or "{_MODELFILE_COMMANDS[-1]}"'
            )
        rest = rest.strip()
        if command in ("parameter", "message"):
            key, _, rest = rest.partition(" ")
            rest = rest.strip()
        else:
            key = ""
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body:
                if index >= len(lines):
                    raise ValueError("unexpected EOF")
                body += "\n" + lines[index]
                index += 1
            rest = body[: body.index('"""')]
        elif len(rest) >= 2 and rest.startswith('"') and rest.endswith('"'):
            rest = rest[1:-1]
        if command == "parameter":
            commands.append((key, rest))
        elif command == "message":
            commands.append(("message", f"{key} {rest}"))
        else:
            commands.append((command, rest))
    if not any(command == "from" for command, _ in commands):
        raise ValueError("no FROM line")
    return commands


def _synthetic_model_info(
    *,
    family: str,
    parameter_count: int,
    file_type: int,
    context_length: int,
    embedding_length: int,
    block_count: int,
    head_count: int,
    head_count_kv: int,
    vocab_size: int,
    feed_forward_length: int | None,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "general.architecture": family,
        "general.file_type": file_type,
        "general.parameter_count": parameter_count,
        "general.quantization_version": 2,
        f"{family}.attention.head_count": head_count,
        f"{family}.attention.head_count_kv": head_count_kv,
        f"{family}.attention.layer_norm_rms_epsilon": 1e-05,
        f"{family}.block_count": block_count,
        f"{family}.context_length": context_length,
        f"{family}.embedding_length": embedding_length,
        f"{family}.rope.freq_base": 100000,
        f"{family}.vocab_size": vocab_size,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.merges": None,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.token_type": None,
        "tokenizer.ggml.tokens": None,
    }
    if feed_forward_length:
        info[f"{family}.feed_forward_length"] = feed_forward_length
    return dict(sorted(info.items()))


def _synthetic_tensors(
    info: dict[str, Any], family: str, quantization: str
) -> list[dict[str, Any]]:
    """A plausible tensor list for /api/show (GGUF models always carry one)."""
    emb = int(info.get(f"{family}.embedding_length") or 0)
    blocks = int(info.get(f"{family}.block_count") or 0)
    heads = int(info.get(f"{family}.attention.head_count") or 1) or 1
    kv_heads = int(info.get(f"{family}.attention.head_count_kv") or heads)
    vocab = int(info.get(f"{family}.vocab_size") or 0)
    ffn = int(info.get(f"{family}.feed_forward_length") or 4 * emb)
    kv_dim = kv_heads * (emb // heads)
    weight = {"Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K"}.get(quantization, quantization)
    if weight not in _GGML_TYPES.values():
        weight = "F16"
    tensors = [{"name": "token_embd.weight", "type": weight, "shape": [emb, vocab]}]
    for block in range(blocks):
        prefix = f"blk.{block}"
        tensors += [
            {"name": f"{prefix}.attn_norm.weight", "type": "F32", "shape": [emb]},
            {"name": f"{prefix}.attn_q.weight", "type": weight, "shape": [emb, emb]},
            {"name": f"{prefix}.attn_k.weight", "type": weight, "shape": [emb, kv_dim]},
            {"name": f"{prefix}.attn_v.weight", "type": weight, "shape": [emb, kv_dim]},
            {"name": f"{prefix}.attn_output.weight", "type": weight, "shape": [emb, emb]},
            {"name": f"{prefix}.ffn_norm.weight", "type": "F32", "shape": [emb]},
            {"name": f"{prefix}.ffn_gate.weight", "type": weight, "shape": [emb, ffn]},
            {"name": f"{prefix}.ffn_up.weight", "type": weight, "shape": [emb, ffn]},
            {"name": f"{prefix}.ffn_down.weight", "type": weight, "shape": [ffn, emb]},
        ]
    tensors.append({"name": "output_norm.weight", "type": "F32", "shape": [emb]})
    return tensors


def _model_from_gguf(gguf: _GGUF) -> StoredModel:
    kv = gguf.kv
    family = (
        kv.get("general.architecture")
        if isinstance(kv.get("general.architecture"), str)
        else "unknown"
    )
    file_type = kv.get("general.file_type")
    # ggml's KV.FileType(): 0 (F32) and a missing key both read as "unknown".
    quantization = (
        _FILE_TYPE_NAMES.get(file_type, "unknown")
        if isinstance(file_type, int) and file_type > 0
        else "unknown"
    )
    count = kv.get("general.parameter_count")
    if not isinstance(count, int):
        count = sum(_product(t["shape"]) for t in gguf.tensors)
    info: dict[str, Any] = {}
    for key, value in kv.items():
        if key in ("general.name", "tokenizer.chat_template"):
            continue
        info[key] = None if isinstance(value, _ArrayInfo) else value
    info["general.parameter_count"] = count
    vocab = kv.get("tokenizer.ggml.tokens")
    if f"{family}.vocab_size" not in info:
        if isinstance(vocab, _ArrayInfo):
            info[f"{family}.vocab_size"] = vocab.count
        elif isinstance(vocab, list):
            info[f"{family}.vocab_size"] = len(vocab)
    return StoredModel(
        name="",
        family=family,
        quantization_level=quantization,
        model_info=dict(sorted(info.items())),
        parameter_size=_human_number(count),
        tensors=gguf.tensors,
    )


_LORA_RE = re.compile(
    r"layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    r"\.(lora_A\.weight|lora_B\.weight|lora_a|lora_b)$"
)


def _adapter_shape_problem(tensors: dict[str, list[int]], base: StoredModel) -> str | None:
    """Check LoRA tensor shapes against the base (DEVIATION: a real server checks at load)."""
    emb = int(base.info("embedding_length") or 0)
    blocks = int(base.info("block_count") or 0)
    heads = int(base.info("attention.head_count") or 0)
    kv_heads = int(base.info("attention.head_count_kv") or heads)
    ffn = base.info("feed_forward_length")
    if not emb:
        return None
    kv_dim = kv_heads * (emb // heads) if heads else None
    dims = {  # module -> (in_features, out_features); None where unknown
        "q_proj": (emb, emb),
        "k_proj": (emb, kv_dim),
        "v_proj": (emb, kv_dim),
        "o_proj": (emb, emb),
        "gate_proj": (emb, ffn),
        "up_proj": (emb, ffn),
        "down_proj": (ffn, emb),
    }
    about = f"the base model is {base.family} with embedding_length {emb} and block_count {blocks}"
    ranks: dict[tuple[int, str], dict[str, int]] = {}
    for tensor_name, shape in sorted(tensors.items()):
        match = _LORA_RE.search(tensor_name)
        if not match:
            continue
        layer, module, part = int(match.group(1)), match.group(3), match.group(4)
        if len(shape) != 2:
            return f"adapter tensor {tensor_name!r} has shape {shape}, expected 2 dimensions"
        if blocks and layer >= blocks:
            return (
                f"adapter tensor {tensor_name!r} is for layer {layer}, but {about}: "
                "the adapter was trained on a different base model"
            )
        in_features, out_features = dims[module]
        if part == "lora_A.weight":
            rank, feature, expected, side = shape[0], shape[1], in_features, "input"
        elif part == "lora_a":  # MLX stores A transposed
            rank, feature, expected, side = shape[1], shape[0], in_features, "input"
        elif part == "lora_B.weight":
            rank, feature, expected, side = shape[1], shape[0], out_features, "output"
        else:
            rank, feature, expected, side = shape[0], shape[1], out_features, "output"
        if expected is not None and feature != expected:
            return (
                f"adapter tensor {tensor_name!r} has shape {shape}: its {side} size {feature} "
                f"does not match {expected} ({about}); "
                "the adapter was trained on a different base model"
            )
        seen = ranks.setdefault((layer, module), {})
        seen[part[-8:] if part.endswith("weight") else part] = rank
        if len(set(seen.values())) > 1:
            return f"adapter tensors of layer {layer} {module} disagree on the LoRA rank: {seen}"
    return None


# ---------------------------------------------------------------------------------------------
# The pytest fixture
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ollama_server() -> Iterator[OllamaStandIn]:
    """A started stand-in holding smollm2:135m (SmolLM2-135M dimensions); stopped afterwards."""
    server = OllamaStandIn()
    server.add_model(
        "smollm2:135m",
        family="llama",
        parameter_size="135M",
        quantization_level="F16",
        context_length=8192,
        embedding_length=576,
        block_count=30,
        head_count=9,
        head_count_kv=3,
        vocab_size=49152,
        feed_forward_length=1536,
        template=SMOLLM2_TEMPLATE,
        parameters={"stop": ["<|im_start|>", "<|im_end|>"]},
        system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        size=270_898_112,
    )
    server.start()
    try:
        yield server
    finally:
        server.close()
