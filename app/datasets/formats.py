"""Record formats: detect which one a file holds and normalise each record to the canonical shape.

The canonical shape is a chat, `{"messages": [{"role", "content", "loss_weight"?, "tool_call"?}],
"tools"?}`, with roles system, user, assistant and tool, or a plain text, `{"text": ...}`.

A `mapping` names, for each canonical field, the source column that holds it
(`{"instruction": "question", "output": "answer"}`); fields it does not name are read from the
column of the same name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import orjson

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")

# The canonical fields of each format, in the order a mapping dialog shows them.
FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "sharegpt": ("conversations", "system", "tools"),
    "messages": ("messages", "tools"),
    "prompt_completion": ("prompt", "completion", "system"),
    "text": ("text",),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}

DETECTION_SAMPLE = 200

# Every speaker name seen in the wild, mapped to a canonical role and whether the turn is a call.
ROLES: dict[str, tuple[str, bool]] = {
    "system": ("system", False),
    "developer": ("system", False),
    "user": ("user", False),
    "human": ("user", False),
    "assistant": ("assistant", False),
    "gpt": ("assistant", False),
    "model": ("assistant", False),
    "function_call": ("assistant", True),
    "tool": ("tool", False),
    "observation": ("tool", False),
    "function": ("tool", False),
}

Record = dict[str, Any]
Normaliser = Callable[[Mapping[str, Any]], Record]


class RecordError(Exception):
    """One record does not match its format; `reason` is a short clause ("missing 'output'")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- detection -----------------------------------------------------------------------------


def shape_of(keys: Mapping[str, Any]) -> str | None:
    """The format a single record's keys suggest, or None."""
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and ("completion" in keys or "response" in keys):
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def detect_format(records: list[dict[str, Any]]) -> str | None:
    """The format most of the first records have, by their keys; None when none fits."""
    votes = Counter(
        shape
        for record in records[:DETECTION_SAMPLE]
        if isinstance(record, dict) and (shape := shape_of(record)) is not None
    )
    if not votes:
        return None
    best = max(votes.values())
    # On a tie the richer format wins (FORMATS lists them that way).
    return next(fmt for fmt in FORMATS if votes.get(fmt) == best)


def closest_format(columns: list[str]) -> str | None:
    """The format whose required fields the columns come closest to (for better messages)."""
    present = set(columns)
    overlaps = {fmt: len(present.intersection(REQUIRED_FIELDS[fmt])) for fmt in FORMATS}
    best = max(overlaps.values())
    return next(fmt for fmt in FORMATS if overlaps[fmt] == best) if best else None


# --- column suggestions for tabular files ---------------------------------------------------

_INSTRUCTION_NAMES = ("instruction", "instructions", "question", "query", "problem", "task")
_OUTPUT_NAMES = ("output", "answer", "response", "completion", "target", "solution", "reply")
_INPUT_NAMES = ("input", "context", "inputs")
_SYSTEM_NAMES = ("system", "system_prompt")
_TEXT_NAMES = ("text", "content", "document", "body", "passage")


def suggest_mapping(columns: list[str]) -> tuple[str | None, dict[str, str]]:
    """Guess a format and a mapping from column names (case-insensitive, common synonyms).

    Returns (None, {}) when nothing fits.
    """
    by_lower: dict[str, str] = {}
    for column in columns:
        by_lower.setdefault(column.strip().lower(), column)
    for guess in (_suggest_chat, _suggest_prompt_completion, _suggest_alpaca, _suggest_text):
        suggestion = guess(by_lower)
        if suggestion is not None:
            return suggestion
    return None, {}


def _pick(by_lower: dict[str, str], names: tuple[str, ...], taken: tuple[str, ...] = ()) -> str:
    return next((by_lower[n] for n in names if n in by_lower and by_lower[n] not in taken), "")


Suggestion = tuple[str, dict[str, str]] | None


def _suggest_chat(by_lower: dict[str, str]) -> Suggestion:
    if column := _pick(by_lower, ("conversations", "conversation")):
        return "sharegpt", _present({"conversations": column, **_tools(by_lower)})
    if column := _pick(by_lower, ("messages", "chat", "dialogue", "dialog")):
        return "messages", _present({"messages": column, **_tools(by_lower)})
    return None


def _tools(by_lower: dict[str, str]) -> dict[str, str]:
    return {"tools": _pick(by_lower, ("tools", "functions"))}


def _suggest_prompt_completion(by_lower: dict[str, str]) -> Suggestion:
    prompt = _pick(by_lower, ("prompt",))
    completion = _pick(by_lower, ("completion", "response", "chosen"))
    if prompt and completion and not _pick(by_lower, ("instruction",)):
        system = _pick(by_lower, _SYSTEM_NAMES)
        return "prompt_completion", _present(
            {"prompt": prompt, "completion": completion, "system": system}
        )
    return None


def _suggest_alpaca(by_lower: dict[str, str]) -> Suggestion:
    instruction = _pick(by_lower, (*_INSTRUCTION_NAMES, "prompt"))
    if not instruction:
        # "input/target" style: the input column is the instruction itself.
        instruction = _pick(by_lower, _INPUT_NAMES[:1])
    output = _pick(by_lower, _OUTPUT_NAMES, taken=(instruction,))
    if not (instruction and output):
        return None
    extra = _pick(by_lower, _INPUT_NAMES, taken=(instruction, output))
    system = _pick(by_lower, _SYSTEM_NAMES)
    history = _pick(by_lower, ("history",))
    fields = {"instruction": instruction, "input": extra, "output": output}
    return "alpaca", _present({**fields, "system": system, "history": history})


def _suggest_text(by_lower: dict[str, str]) -> Suggestion:
    if column := _pick(by_lower, _TEXT_NAMES):
        return "text", {"text": column}
    return None


def _present(mapping: dict[str, str]) -> dict[str, str]:
    return {field: column for field, column in mapping.items() if column}


# --- normalisation -------------------------------------------------------------------------


def normalise(record: dict[str, Any], fmt: str, mapping: dict[str, str]) -> Record:
    """The canonical record for `record` in format `fmt`; RecordError when it does not fit."""
    return make_normaliser(fmt, mapping)(record)


def make_normaliser(fmt: str, mapping: Mapping[str, str]) -> Normaliser:
    """A function that normalises one record; built once per import so the loop stays tight."""
    if fmt not in _BUILDERS:
        raise ValueError(f"unknown format {fmt!r}")
    keys = {field: mapping.get(field) or field for field in FIELDS[fmt]}
    if fmt == "prompt_completion" and not mapping.get("completion"):
        keys["completion"] = ""  # "completion", else "response": decided per record
    return _BUILDERS[fmt](keys)


def _alpaca(keys: dict[str, str]) -> Normaliser:
    instruction_key, input_key, output_key = keys["instruction"], keys["input"], keys["output"]
    system_key, history_key = keys["system"], keys["history"]

    def normalise_alpaca(record: Mapping[str, Any]) -> Record:
        # Runs once per record: the common case (all text) is inlined, the rest is a call.
        instruction, output = record.get(instruction_key), record.get(output_key)
        extra = record.get(input_key)
        if type(instruction) is not str:
            instruction = _required_text(record, instruction_key)
        if type(output) is not str:
            output = _required_text(record, output_key)
        if type(extra) is not str:
            extra = _optional_text(record, input_key)
        user = f"{instruction}\n\n{extra}" if extra and not extra.isspace() else instruction
        system = record.get(system_key)
        messages = _system_turn(_optional_text(record, system_key)) if system else []
        history = record.get(history_key)
        if history:
            messages.extend(_history_turns(history, history_key))
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": output})
        return {"messages": messages}

    return normalise_alpaca


def _history_turns(history: Any, key: str) -> list[Record]:
    if not isinstance(history, list):
        raise RecordError(f"{quoted(key)} is not a list of [instruction, response] pairs")
    turns: list[Record] = []
    for pair in history:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RecordError(f"{quoted(key)} is not a list of [instruction, response] pairs")
        question, answer = (_as_text(part, key) for part in pair)
        turns.append({"role": "user", "content": question})
        turns.append({"role": "assistant", "content": answer})
    return turns


def _sharegpt(keys: dict[str, str]) -> Normaliser:
    turns_key, system_key, tools_key = keys["conversations"], keys["system"], keys["tools"]

    def normalise_sharegpt(record: Mapping[str, Any]) -> Record:
        turns = _turn_list(record, turns_key)
        messages = [_turn(turn, number) for number, turn in enumerate(turns, 1)]
        system = _optional_text(record, system_key)
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        return _with_tools({"messages": messages}, record, tools_key)

    return normalise_sharegpt


def _messages(keys: dict[str, str]) -> Normaliser:
    turns_key, tools_key = keys["messages"], keys["tools"]

    def normalise_messages(record: Mapping[str, Any]) -> Record:
        turns = _turn_list(record, turns_key)
        messages = [_turn(turn, number) for number, turn in enumerate(turns, 1)]
        return _with_tools({"messages": messages}, record, tools_key)

    return normalise_messages


def _prompt_completion(keys: dict[str, str]) -> Normaliser:
    prompt_key, completion_key, system_key = keys["prompt"], keys["completion"], keys["system"]

    def normalise_prompt_completion(record: Mapping[str, Any]) -> Record:
        prompt = _required_text(record, prompt_key)
        key = completion_key or ("response" if "completion" not in record else "completion")
        if key == "response" and "response" not in record:
            raise RecordError("missing 'completion'")
        messages = _system_turn(_optional_text(record, system_key))
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": _required_text(record, key)})
        return {"messages": messages}

    return normalise_prompt_completion


def _text(keys: dict[str, str]) -> Normaliser:
    text_key = keys["text"]

    def normalise_text(record: Mapping[str, Any]) -> Record:
        return {"text": _required_text(record, text_key)}

    return normalise_text


_BUILDERS: dict[str, Callable[[dict[str, str]], Normaliser]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "prompt_completion": _prompt_completion,
    "text": _text,
}


# --- pieces ----------------------------------------------------------------------------------


def _required_text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if type(value) is str:
        return value
    if value is None:
        raise RecordError(
            f"missing {quoted(key)}" if key not in record else f"{quoted(key)} is null"
        )
    return _as_text(value, key)


def _optional_text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if type(value) is str:
        return value
    return "" if value is None else _as_text(value, key)


def _as_text(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    # Numbers are text that a spreadsheet or a JSON export typed for us ("answer": 42).
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{quoted(key)} is not text")


def _system_turn(system: str) -> list[Record]:
    return [{"role": "system", "content": system}] if system.strip() else []


def _turn_list(record: Mapping[str, Any], key: str) -> list[Any]:
    turns = record.get(key)
    if type(turns) is not list:
        if turns is None:
            raise RecordError(
                f"missing {quoted(key)}" if key not in record else f"{quoted(key)} is null"
            )
        raise RecordError(f"{quoted(key)} is not a list")
    if not turns:
        raise RecordError(f"{quoted(key)} is empty")
    return turns


def _turn(turn: Any, number: int) -> Record:
    """One message from a `{role, content}` or `{from, value}` turn."""
    if not isinstance(turn, dict):
        raise RecordError(f"turn {number} is not an object")
    speaker = turn.get("role", turn.get("from"))
    role = ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        raise RecordError(f"turn {number} has an unknown role {_short(speaker)}")
    message: Record = {"role": role[0], "content": _turn_content(turn, number)}
    if role[1] or (turn.get("tool_calls") and role[0] == "assistant"):
        message["tool_call"] = True
    weight = turn.get("loss_weight")
    if weight is not None:
        message["loss_weight"] = _loss_weight(weight, number)
    return message


def _turn_content(turn: Mapping[str, Any], number: int) -> str:
    content = turn.get("content", turn.get("value"))
    if type(content) is str:
        return content
    if isinstance(content, list):
        return "".join(_part_text(part, number) for part in content)
    if content is None and turn.get("tool_calls"):
        # An OpenAI-style call has no content; the calls themselves are what is said.
        return orjson.dumps(turn["tool_calls"], default=str).decode()
    if content is None:
        raise RecordError(f"turn {number} has no content")
    return _as_text(content, f"turn {number} content")


def _part_text(part: Any, number: int) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict) or part.get("type", "text") != "text":
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise RecordError(f"turn {number} has a {_short(kind)} part; only text parts are supported")
    text = part.get("text", part.get("value"))
    if not isinstance(text, str):
        raise RecordError(f"turn {number} has a text part without text")
    return text


def _loss_weight(weight: Any, number: int) -> float:
    if isinstance(weight, int | float) and not isinstance(weight, bool):
        return float(weight)
    raise RecordError(f"turn {number} has a loss_weight that is not a number")


def _with_tools(result: Record, record: Mapping[str, Any], key: str) -> Record:
    tools = record.get(key)
    if tools is not None and tools != "":
        result["tools"] = tools
    return result


def display(text: str) -> str:
    """`text` as it can stand in a one-line message: control characters escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def quoted(name: str, limit: int = 60) -> str:
    """A name from the user's data, quoted for a message (escaped, and shortened if long)."""
    shown = display(name)
    return f"'{shown if len(shown) <= limit else shown[: limit - 3] + '...'}'"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
