"""Records to training examples: token ids and a loss weight per token.

Chats are rendered with the base tokenizer's chat template; the loss falls on the assistant's
turns only (each weighted by its `loss_weight`, 1 by default), end-of-turn marker included, so the
model learns to stop. Plain texts train on every token. An example longer than max_seq_length is
cut to it and counted; one left with no token to learn from is skipped and counted.

The weight at position t is the weight of predicting token t from the tokens before it; the first
token of an example has none, which also keeps packed examples from learning across each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from jinja2 import TemplateError
from numpy.typing import NDArray
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from app.datasets.splits import validation_indices
from app.jobs.spec import DatasetSource
from app.training.errors import TrainingError

log = logging.getLogger(__name__)

# Used, and written into the outputs, where the base tokenizer has no chat template of its own.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CHUNK = 512  # records tokenised per call, to use the fast tokenizer's batching

Span = tuple[int, int, float]  # characters [start, end) and the loss weight of their tokens


@dataclass
class Examples:
    """Examples stored flat: example i is ids[offsets[i]:offsets[i + 1]] (and its weights)."""

    ids: NDArray[np.int64]
    weights: NDArray[np.float32]
    offsets: NDArray[np.int64]
    truncated: int = 0
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> NDArray[np.int64]:
        return np.diff(self.offsets)

    def example(self, index: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end], self.weights[start:end]


@dataclass
class _Builder:
    max_length: int
    ids: list[NDArray[np.int64]] = field(default_factory=list)
    weights: list[NDArray[np.float32]] = field(default_factory=list)
    truncated: int = 0
    skipped: int = 0

    def add(self, ids: NDArray[np.int64], weights: NDArray[np.float32]) -> None:
        if len(ids) > self.max_length:
            ids, weights = ids[: self.max_length], weights[: self.max_length]
            self.truncated += 1
        weights = weights.copy()
        weights[:1] = 0.0
        if not weights.any():
            self.skipped += 1
            return
        self.ids.append(ids)
        self.weights.append(weights)

    def build(self) -> Examples:
        lengths = [len(ids) for ids in self.ids]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        weights = np.concatenate(self.weights) if self.weights else np.zeros(0, np.float32)
        return Examples(ids, weights, offsets, self.truncated, self.skipped)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        log.info("the base tokenizer has no chat template; using ChatML, written into the output")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a records.jsonl file, checked for the canonical shape."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise _unreadable(f"the dataset records {path} cannot be read ({error.strerror})") from None
    records = [_record(line, number, path) for number, line in enumerate(lines, 1) if line.strip()]
    if not records:
        raise _unreadable(f"the dataset records {path} hold no records")
    return records


def _record(line: bytes, number: int, path: Path) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _unreadable(f"line {number} of {path} is not JSON") from None
    if not isinstance(record, dict) or not (
        isinstance(record.get("messages"), list) or isinstance(record.get("text"), str)
    ):
        raise _unreadable(f"line {number} of {path} is neither a chat nor a text record")
    return record


def split_records(
    records: list[dict[str, Any]], source: DatasetSource, fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): the split file's held-out indices, or a seeded split of `fraction`."""
    held_out = set(_split_indices(source, len(records), fraction, seed))
    train = [r for i, r in enumerate(records) if i not in held_out]
    validation = [r for i, r in enumerate(records) if i in held_out]
    return train, validation


def _split_indices(source: DatasetSource, rows: int, fraction: float, seed: int) -> list[int]:
    if source.split is None:
        return validation_indices(rows, fraction, seed)
    try:
        document = orjson.loads(source.split.read_bytes())
        indices = [int(i) for i in document["validation_indices"]]
    except OSError as error:
        raise _unreadable(
            f"the split file {source.split} cannot be read ({error.strerror})"
        ) from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise _unreadable(f"the split file {source.split} is not a split.json") from None
    if any(not 0 <= i < rows for i in indices):
        raise _unreadable(f"the split file {source.split} names records the dataset lacks")
    return indices


def tokenize(
    records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Examples:
    """Token ids and loss weights of every record, in order, cut to `max_length` tokens."""
    builder = _Builder(max_length)
    renderer = _Renderer(tokenizer)
    for chunk in _chunks(records, _CHUNK):
        encoded = {**_chats(renderer, chunk, tokenizer), **_texts(chunk, tokenizer)}
        for index in sorted(encoded):
            builder.add(*encoded[index])
    builder.skipped += renderer.failed
    return builder.build()


_Encoded = dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]]  # by index in the chunk


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _chats(
    renderer: _Renderer, chunk: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase
) -> _Encoded:
    rendered = {i: renderer.render(r) for i, r in enumerate(chunk) if "messages" in r}
    kept = {i: r for i, r in rendered.items() if r is not None}
    if not kept:
        return {}
    texts = [text for text, _spans in kept.values()]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return {
        index: (np.asarray(ids, np.int64), _span_weights(offsets, spans))
        for (index, (_text, spans)), ids, offsets in zip(
            kept.items(), encoded["input_ids"], encoded["offset_mapping"], strict=True
        )
    }


def _texts(chunk: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> _Encoded:
    indices = [i for i, record in enumerate(chunk) if "messages" not in record]
    if not indices:
        return {}
    eos = tokenizer.eos_token_id
    encoded = tokenizer([chunk[i]["text"] for i in indices], add_special_tokens=True)
    result: _Encoded = {}
    for index, ids in zip(indices, encoded["input_ids"], strict=True):
        ended = ids if eos is None or (ids and ids[-1] == eos) else [*ids, eos]
        # The appended end-of-text token teaches the model where a document ends.
        result[index] = (np.asarray(ended, np.int64), np.ones(len(ended), np.float32))
    return result


def _span_weights(offsets: Sequence[tuple[int, int]], spans: list[Span]) -> NDArray[np.float32]:
    """Each token's weight: that of the assistant span its first character falls in, else 0."""
    starts = np.asarray([start for start, _end in offsets], np.int64)
    weights = np.zeros(len(starts), np.float32)
    for start, end, weight in spans:
        weights[(starts >= start) & (starts < end)] = weight
    return weights


class _Renderer:
    """Renders a chat to text and finds the character spans of its assistant turns."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self.failed = 0
        self._warned_unstable = False

    def render(self, record: dict[str, Any]) -> tuple[str, list[Span]] | None:
        messages = [_plain_message(m) for m in record["messages"]]
        tools = _tools(record.get("tools"))
        try:
            text = self._text(messages, tools, generation_prompt=False)
            return text, self._spans(record["messages"], messages, tools, text)
        except (TemplateError, TypeError, ValueError, KeyError) as error:
            self._note_failure(error)
            return None

    def _spans(
        self,
        originals: list[dict[str, Any]],
        messages: list[dict[str, str]],
        tools: list[Any] | None,
        text: str,
    ) -> list[Span]:
        spans: list[Span] = []
        for index, original in enumerate(originals):
            if original.get("role") != "assistant":
                continue
            weight = float(original.get("loss_weight", 1.0))
            prefix = self._text(messages[:index], tools, generation_prompt=True) if index else ""
            upto = self._text(messages[: index + 1], tools, generation_prompt=False)
            if text.startswith(upto) and upto.startswith(prefix):
                spans.append((len(prefix), len(upto), weight))
            else:
                spans.append(self._found_span(text, messages[index]["content"], spans, weight))
        return spans

    def _found_span(self, text: str, content: str, spans: list[Span], weight: float) -> Span:
        """The span of `content` itself, for templates whose earlier turns change later on."""
        if not self._warned_unstable:
            log.warning("the chat template re-renders earlier turns; training on content only")
            self._warned_unstable = True
        start = text.find(content, spans[-1][1] if spans else 0)
        if start < 0:
            raise ValueError("the chat template drops an assistant turn")
        return start, start + len(content), weight

    def _text(
        self, messages: list[dict[str, str]], tools: list[Any] | None, generation_prompt: bool
    ) -> str:
        rendered = self._tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )
        if not isinstance(rendered, str):
            raise TypeError("the chat template did not render to text")
        return rendered

    def _note_failure(self, error: Exception) -> None:
        if not self.failed:
            log.warning("skipping records the chat template cannot render: %s", error)
        self.failed += 1


def _plain_message(message: dict[str, Any]) -> dict[str, str]:
    # Templates see role and content only; loss_weight and tool_call are the trainer's business.
    return {"role": str(message.get("role")), "content": str(message.get("content", ""))}


def _tools(tools: Any) -> list[Any] | None:
    if isinstance(tools, str):  # some datasets keep the tool list as JSON text
        try:
            tools = orjson.loads(tools)
        except orjson.JSONDecodeError:
            return None
    return tools if isinstance(tools, list) and tools else None


def _unreadable(message: str) -> TrainingError:
    return TrainingError("dataset_unreadable", f"{message}: re-import the dataset.")
