"""Format detection, normalisation to the canonical shape, and column suggestions."""

from __future__ import annotations

import pytest

from app.datasets import FORMATS, RecordError, detect_format, normalise, suggest_mapping


def test_formats_are_the_documented_ones() -> None:
    assert FORMATS == ("alpaca", "sharegpt", "messages", "prompt_completion", "text")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "q", "input": "", "output": "a"}, "alpaca"),
        ({"instruction": "q", "output": "a", "history": []}, "alpaca"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"prompt": "p", "response": "c"}, "prompt_completion"),
        ({"text": "t"}, "text"),
        ({"question": "q", "answer": "a"}, None),
    ],
)
def test_detect_format_by_keys(record: dict[str, object], expected: str | None) -> None:
    assert detect_format([record]) == expected


def test_detect_format_follows_the_majority() -> None:
    records = [{"instruction": "q", "output": "a"}] * 5 + [{"text": "t"}] * 2
    assert detect_format(records) == "alpaca"
    assert detect_format([]) is None


def test_alpaca_with_system_history_and_input() -> None:
    record = {
        "instruction": "Translate",
        "input": "Hallo",
        "output": "Hello",
        "system": "Be brief.",
        "history": [["Hi", "Hello!"]],
    }
    assert normalise(record, "alpaca", {}) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Translate\n\nHallo"},
            {"role": "assistant", "content": "Hello"},
        ]
    }


def test_alpaca_without_input_keeps_the_instruction_alone() -> None:
    result = normalise({"instruction": "q", "input": "", "output": "a"}, "alpaca", {})
    assert result["messages"][0] == {"role": "user", "content": "q"}


def test_alpaca_through_a_mapping_with_csv_strings() -> None:
    mapping = {"instruction": "question", "output": "answer", "input": "context"}
    record = {"question": "Why?", "answer": "Because.", "context": ""}
    result = normalise(record, "alpaca", mapping)
    assert [m["content"] for m in result["messages"]] == ["Why?", "Because."]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"instruction": "q"}, "missing 'output'"),
        ({"instruction": "q", "output": None}, "'output' is null"),
        ({"instruction": "q", "output": ["a"]}, "'output' is not text"),
        ({"instruction": "q", "output": "a", "history": "x"}, "'history' is not a list"),
    ],
)
def test_alpaca_errors_name_the_field(record: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        normalise(record, "alpaca", {})
    assert caught.value.reason.startswith(reason)


def test_sharegpt_roles_tools_and_system() -> None:
    record = {
        "system": "You call tools.",
        "tools": '[{"name": "f"}]',
        "conversations": [
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "f"}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "It is sunny."},
        ],
    }
    result = normalise(record, "sharegpt", {})
    assert result["tools"] == '[{"name": "f"}]'
    assert [m["role"] for m in result["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert result["messages"][2]["tool_call"] is True
    assert "tool_call" not in result["messages"][4]


def test_sharegpt_accepts_user_assistant_tool_names() -> None:
    record = {
        "conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"}]
    }
    assert [m["role"] for m in normalise(record, "sharegpt", {})["messages"]] == [
        "user",
        "assistant",
    ]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"conversations": "hi"}, "'conversations' is not a list"),
        ({"conversations": []}, "'conversations' is empty"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "turn 1 has an unknown role"),
        ({"conversations": [{"from": "human"}]}, "turn 1 has no content"),
        ({"conversations": ["hi"]}, "turn 1 is not an object"),
    ],
)
def test_sharegpt_errors(record: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        normalise(record, "sharegpt", {})
    assert caught.value.reason.startswith(reason)


def test_messages_with_typed_parts_and_loss_weight() -> None:
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "hi"}], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "value": "lo"}],
                "loss_weight": 1,
            },
        ]
    }
    result = normalise(record, "messages", {})
    assert result["messages"] == [
        {"role": "user", "content": "hi", "loss_weight": 0.0},
        {"role": "assistant", "content": "Hello", "loss_weight": 1.0},
    ]


def test_messages_rejects_image_parts_and_bad_weights() -> None:
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}]}
    with pytest.raises(RecordError, match="only text parts"):
        normalise(image, "messages", {})
    weight = {"messages": [{"role": "user", "content": "x", "loss_weight": "heavy"}]}
    with pytest.raises(RecordError, match="loss_weight"):
        normalise(weight, "messages", {})


def test_messages_openai_tool_calls_without_content() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]},
            {"role": "tool", "content": "sunny"},
        ],
        "tools": [{"type": "function"}],
    }
    result = normalise(record, "messages", {})
    assert result["messages"][1]["tool_call"] is True
    assert '"name":"f"' in result["messages"][1]["content"]
    assert result["tools"] == [{"type": "function"}]


def test_prompt_completion_and_response() -> None:
    expected = {
        "messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    }
    assert normalise({"prompt": "p", "completion": "c"}, "prompt_completion", {}) == expected
    assert normalise({"prompt": "p", "response": "c"}, "prompt_completion", {}) == expected
    with pytest.raises(RecordError, match="missing 'completion'"):
        normalise({"prompt": "p"}, "prompt_completion", {})


def test_text() -> None:
    assert normalise({"text": "hello"}, "text", {}) == {"text": "hello"}
    assert normalise({"body": "hello"}, "text", {"text": "body"}) == {"text": "hello"}
    with pytest.raises(RecordError, match="missing 'text'"):
        normalise({"body": "x"}, "text", {})


def test_numbers_are_accepted_as_text() -> None:
    result = normalise({"instruction": "2+2", "output": 4}, "alpaca", {})
    assert result["messages"][1]["content"] == "4"


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["question", "answer"], ("alpaca", {"instruction": "question", "output": "answer"})),
        (
            ["Instruction", "Context", "Response", "category"],
            ("alpaca", {"instruction": "Instruction", "input": "Context", "output": "Response"}),
        ),
        (["input", "target"], ("alpaca", {"instruction": "input", "output": "target"})),
        (
            ["prompt", "response"],
            ("prompt_completion", {"prompt": "prompt", "completion": "response"}),
        ),
        (
            ["PROMPT", "Completion"],
            ("prompt_completion", {"prompt": "PROMPT", "completion": "Completion"}),
        ),
        (["id", "content"], ("text", {"text": "content"})),
        (
            ["conversations", "tools"],
            ("sharegpt", {"conversations": "conversations", "tools": "tools"}),
        ),
        (["messages"], ("messages", {"messages": "messages"})),
        (["a", "b"], (None, {})),
        ([], (None, {})),
    ],
)
def test_suggest_mapping(columns: list[str], expected: tuple[str | None, dict[str, str]]) -> None:
    assert suggest_mapping(columns) == expected
