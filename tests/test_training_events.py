"""The event protocol and the training spec: typed, validated, one sentence when wrong."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import BadInputError
from app.events import (
    BadEventError,
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    FinishedEvent,
    LogEvent,
    ProgressEvent,
    StartedEvent,
    Summary,
    dump_event,
    parse_event,
)
from app.jobs.spec import TrainingSpec, load_spec, write_spec
from app.settings import Hyperparameters

SUMMARY = Summary(
    steps=10,
    total_steps=10,
    epochs=1.0,
    tokens=1000,
    trained_tokens=400,
    train_loss=1.5,
    eval_loss=1.7,
    duration_seconds=12.5,
    tokens_per_second=80.0,
)
EXAMPLES = [
    StartedEvent(total_steps=200, resume_step=0, device="cpu"),
    ProgressEvent(
        step=10,
        total_steps=200,
        epoch=0.25,
        loss=1.93,
        learning_rate=2e-4,
        grad_norm=0.7,
        tokens_per_second=5120.0,
        eta_seconds=412,
    ),
    EvalEvent(step=50, eval_loss=1.71),
    CheckpointEvent(step=50, path="checkpoints/step-50"),
    LogEvent(level="info", message="loaded"),
    FinishedEvent(status="completed", artifacts={"adapter": "adapter/"}, summary=SUMMARY),
    ErrorEvent(kind="out_of_memory", message="too big.", traceback="Traceback ..."),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event)
def test_every_event_survives_a_round_trip(event):
    line = dump_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_event(line) == event
    assert parse_event(line.decode()) == event


def test_the_lines_of_design_md_parse_as_they_are():
    lines = [
        '{"event": "started", "total_steps": 200, "resume_step": 0, "device": "cpu"}',
        '{"event": "progress", "step": 10, "total_steps": 200, "epoch": 0.25, "loss": 1.93, '
        '"learning_rate": 0.0002, "tokens_per_second": 5120.0, "eta_seconds": 412}',
        '{"event": "eval", "step": 50, "eval_loss": 1.71}',
        '{"event": "checkpoint", "step": 50, "path": "checkpoints/step-50"}',
        '{"event": "log", "level": "info", "message": "..."}',
        '{"event": "finished", "status": "completed", "artifacts": {"adapter": "adapter/"}}',
        '{"event": "error", "kind": "out_of_memory", "message": "...", "traceback": "..."}',
    ]
    kinds = [parse_event(line).event for line in lines]
    assert kinds == ["started", "progress", "eval", "checkpoint", "log", "finished", "error"]


def test_fields_from_a_newer_trainer_are_ignored():
    event = parse_event('{"event": "eval", "step": 3, "eval_loss": 1.0, "perplexity": 2.7}')
    assert event == EvalEvent(step=3, eval_loss=1.0, time=event.time)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", "not a training event"),
        ('{"event": "teleport"}', "teleport"),
        ('{"event": "eval", "step": 3}', "eval_loss"),
        ('{"step": 3}', "event"),
    ],
)
def test_a_line_that_is_no_event_is_refused_with_a_reason(line, says):
    with pytest.raises(BadEventError, match=says):
        parse_event(line)


@given(st.text(max_size=200))
def test_no_text_crashes_the_parser(text):
    with contextlib.suppress(BadEventError):
        parse_event(text)


def spec_file(folder: Path, data: dict) -> Path:
    path = folder / "spec.json"
    path.write_text(json.dumps(data))
    return path


MINIMAL = {"base_model": "HuggingFaceTB/SmolLM2-135M", "dataset": {"records": "records.jsonl"}}


def test_a_minimal_spec_gets_the_defaults_and_resolves_paths_against_its_folder(tmp_path):
    spec = load_spec(spec_file(tmp_path, MINIMAL))
    assert spec.dataset.records == tmp_path / "records.jsonl"
    assert spec.method == "lora" and spec.device == "auto"
    assert spec.hyperparameters.lora_alpha == 32
    assert spec.hyperparameters.keep_checkpoints >= 1


def test_write_spec_round_trips(tmp_path):
    spec = TrainingSpec.model_validate(MINIMAL | {"threads": 2, "output": {"merge": True}})
    write_spec(spec, tmp_path / "spec.json")
    assert load_spec(tmp_path / "spec.json").model_dump(exclude={"dataset"}) == spec.model_dump(
        exclude={"dataset"}
    )


def test_the_settings_hyperparameters_are_valid_training_hyperparameters():
    """A job starts from the settings' defaults: every one of them must be accepted as is."""
    defaults = Hyperparameters(epochs=5, method="full").model_dump()
    spec = TrainingSpec.model_validate(MINIMAL | {"hyperparameters": defaults})
    assert spec.hyperparameters.epochs == 5 and spec.method == "full"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs: must be at least 1."),
        ({"hyperparameters": {"method": "magic"}}, "hyperparameters.method: choose one of"),
        ({"device": "tpu"}, "device: choose one of"),
        ({"base_model": ""}, "base_model"),
        ({"dataset": {}}, "dataset.records is missing."),
        ({"surprise": 1}, "surprise: this setting is not known"),
        (
            {"hyperparameters": {"batch_size": 2, "gradient_accumulation_steps": 4}},
            "gradient_accumulation_steps must not exceed batch_size",
        ),
    ],
)
def test_an_invalid_spec_names_the_field_in_one_sentence(tmp_path, change, says):
    with pytest.raises(BadInputError) as caught:
        load_spec(spec_file(tmp_path, MINIMAL | change))
    assert says in caught.value.message
    assert caught.value.message.endswith(".") and "\n" not in caught.value.message


def test_a_missing_or_broken_spec_file_says_so(tmp_path):
    with pytest.raises(BadInputError, match="cannot be read"):
        load_spec(tmp_path / "nowhere.json")
    (tmp_path / "spec.json").write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_spec(tmp_path / "spec.json")
