"""The training engine on a tiny local Llama, in this process: it learns, saves, resumes, fails
clearly. (The subprocess itself, signals and a vanishing parent: test_training_process.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from app.events import parse_event
from tests import training_fixtures
from tests.training_fixtures import (
    chat,
    facts_records,
    losses_by_step,
    make_job,
    read_events_file,
    train_in_process,
    write_records,
)

tiny_model = training_fixtures.tiny_model
# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a model.
PEFT_ASKS_A_DEPRECATED_QUESTION = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"


@pytest.fixture
def facts(tmp_path):
    return write_records(tmp_path / "dataset", facts_records(4))


def test_lora_loss_falls_on_a_memorisable_dataset(tmp_path, tiny_model, facts):
    job = make_job(tmp_path / "job", tiny_model, facts, epochs=4, learning_rate=1e-2)
    outcome = train_in_process(job)
    assert outcome.status == 0, outcome.last
    losses = list(losses_by_step(outcome).values())
    assert len(losses) == 32
    assert sum(losses[-4:]) / 4 < 0.25 * sum(losses[:4]) / 4
    finished = outcome.last
    assert finished.event == "finished" and finished.status == "completed"
    assert finished.artifacts == {"adapter": "adapter/"}
    summary = finished.summary
    assert summary.steps == 32 and summary.tokens > summary.trained_tokens > 0
    assert json.loads((job / "summary.json").read_text())["steps"] == 32


def test_the_adapter_has_the_exact_files_an_integer_alpha_and_the_chat_template(
    tmp_path, tiny_model, facts
):
    job = make_job(tmp_path / "job", tiny_model, facts, max_steps=2, lora_alpha=24)
    assert train_in_process(job).status == 0
    adapter = job / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 24 and type(config["lora_alpha"]) is int
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert config["base_model_name_or_path"] == str(tiny_model)
    assert "<|im_start|>" in (adapter / "chat_template.jinja").read_text()
    assert (adapter / "tokenizer.json").is_file()


def _logits(model, tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who are you?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.filterwarnings(PEFT_ASKS_A_DEPRECATED_QUESTION)
def test_the_adapter_reloads_and_merging_gives_the_same_logits(tmp_path, tiny_model, facts):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = make_job(
        tmp_path / "job", tiny_model, facts, epochs=2, learning_rate=1e-2, output={"merge": True}
    )
    outcome = train_in_process(job)
    assert outcome.last.artifacts == {"adapter": "adapter/", "merged": "merged/"}
    tokenizer = AutoTokenizer.from_pretrained(str(job / "adapter"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    base_logits = _logits(base, tokenizer)
    adapted = PeftModel.from_pretrained(base, str(job / "adapter")).eval()
    adapted_logits = _logits(adapted, tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(str(job / "merged")).eval()
    assert (job / "merged" / "model.safetensors").is_file()
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-3)  # it learnt something
    # W·x + B·(A·x) against (W + B·A)·x: equal up to float32 rounding on logits of about 10.
    torch.testing.assert_close(_logits(merged, tokenizer), adapted_logits, atol=1e-4, rtol=1e-4)


def test_resuming_gives_the_losses_of_an_uninterrupted_run(tmp_path, tiny_model, facts):
    """Dropout, accumulation, evaluation and several epochs, stopped between checkpoints.

    Tolerance: per-step losses and final weights within 1e-6 (absolute) and 1e-5 (relative);
    on one CPU with the same thread count they are in practice bit-identical.
    """
    settings = dict(
        epochs=3,
        save_steps=5,
        eval_steps=4,
        keep_checkpoints=2,
        lora_dropout=0.1,
        gradient_accumulation_steps=2,
        eval_fraction=0.1,
    )
    whole = train_in_process(make_job(tmp_path / "whole", tiny_model, facts, **settings))
    job = make_job(tmp_path / "parts", tiny_model, facts, **settings)
    first = train_in_process(job, stop_at=11)
    assert first.last.status == "cancelled"
    assert [p.name for p in sorted((job / "checkpoints").iterdir())] == ["step-10", "step-11"]
    second = train_in_process(job)
    assert second.of("started")[0].resume_step == 11
    expected = {s: v for s, v in losses_by_step(whole).items() if s > 11}
    assert losses_by_step(second) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert second.last.summary.steps == whole.last.summary.steps == 24  # 29 examples, 3 epochs
    assert second.last.summary.tokens == whole.last.summary.tokens
    evals = {e.step: e.eval_loss for e in whole.of("eval")}
    assert {e.step: e.eval_loss for e in second.of("eval")} == pytest.approx(
        {s: v for s, v in evals.items() if s > 11}, rel=1e-5, abs=1e-6
    )
    _same_adapter(whole_dir=tmp_path / "whole", resumed_dir=job)


def _same_adapter(whole_dir, resumed_dir):
    from safetensors.torch import load_file

    whole = load_file(str(whole_dir / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(resumed_dir / "adapter" / "adapter_model.safetensors"))
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-6, rtol=1e-5)


def test_events_jsonl_holds_every_event_in_order(tmp_path, tiny_model, facts):
    job = make_job(
        tmp_path / "job", tiny_model, facts, epochs=1, save_steps=3, eval_steps=2, eval_fraction=0.2
    )
    outcome = train_in_process(job)
    kinds = {e.event for e in outcome.events}
    assert {"started", "progress", "eval", "checkpoint", "finished"} <= kinds
    assert read_events_file(job) == outcome.events
    checkpoint = outcome.of("checkpoint")[0]
    assert checkpoint.path == "checkpoints/step-3" and (job / checkpoint.path).is_dir()
    assert outcome.of("eval")[-1].step == outcome.last.summary.steps  # and at the end


def test_only_the_last_checkpoints_are_kept(tmp_path, tiny_model, facts):
    job = make_job(tmp_path / "job", tiny_model, facts, epochs=2, save_steps=2, keep_checkpoints=3)
    assert train_in_process(job).status == 0
    names = sorted(p.name for p in (job / "checkpoints").iterdir())
    assert names == ["step-10", "step-12", "step-14"]
    for name in names:
        contents = {p.name for p in (job / "checkpoints" / name).iterdir()}
        assert contents == {"trainable.safetensors", "training_state.pt", "state.json"}


def test_a_full_fine_tune_trains_every_weight_and_writes_merged_weights(
    tmp_path, tiny_model, facts
):
    from transformers import AutoModelForCausalLM

    job = make_job(tmp_path / "job", tiny_model, facts, method="full", epochs=3, learning_rate=5e-3)
    outcome = train_in_process(job)
    assert outcome.status == 0, outcome.last
    started = outcome.of("started")[0]
    assert started.trainable_parameters == started.total_parameters
    losses = list(losses_by_step(outcome).values())
    assert losses[-1] < 0.5 * losses[0]
    assert outcome.last.artifacts == {"merged": "merged/"}
    tuned = AutoModelForCausalLM.from_pretrained(str(job / "merged"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    assert not torch.equal(
        tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight
    )
    assert (job / "merged" / "tokenizer.json").is_file()


def test_gradient_checkpointing_changes_memory_not_losses(tmp_path, tiny_model, facts):
    plain = train_in_process(
        make_job(tmp_path / "off", tiny_model, facts, max_steps=3, gradient_checkpointing="off")
    )
    saving = train_in_process(
        make_job(tmp_path / "on", tiny_model, facts, max_steps=3, gradient_checkpointing="on")
    )
    assert saving.of("started")[0].gradient_checkpointing
    assert losses_by_step(saving) == pytest.approx(losses_by_step(plain), rel=1e-5)


def test_gradient_checkpointing_switches_itself_on_when_memory_is_short(
    tmp_path, tiny_model, facts, monkeypatch
):
    from app.training import methods

    monkeypatch.setattr(methods, "available_memory", lambda device: 1_000_000)
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, facts, max_steps=1))
    assert outcome.of("started")[0].gradient_checkpointing
    assert any("gradient checkpointing is on" in e.message for e in outcome.of("log"))


def test_qlora_on_a_machine_without_cuda_fails_with_the_clear_message(tmp_path, tiny_model, facts):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, facts, method="qlora"))
    assert outcome.status == 3
    error = outcome.last
    assert error.event == "error" and error.kind == "device_unavailable"
    assert "QLoRA needs an NVIDIA GPU with CUDA" in error.message and "LoRA" in error.message


def test_a_bad_spec_is_an_error_event_naming_the_field(tmp_path, tiny_model, facts):
    job = make_job(tmp_path / "job", tiny_model, facts)
    spec = json.loads((job / "spec.json").read_text())
    spec["hyperparameters"]["learning_rate"] = -1
    (job / "spec.json").write_text(json.dumps(spec))
    outcome = train_in_process(job)
    assert outcome.status == 3
    assert outcome.last.kind == "bad_spec"
    assert "hyperparameters.learning_rate: must be more than 0." in outcome.last.message
    assert parse_event((job / "events.jsonl").read_bytes()) == outcome.last


def test_a_missing_base_model_is_an_error_event(tmp_path, facts):
    outcome = train_in_process(make_job(tmp_path / "job", tmp_path / "no-model", facts))
    assert outcome.status == 3
    assert outcome.last.kind == "model_not_found"
    assert "no-model" in outcome.last.message and "no such folder" in outcome.last.message


def test_a_missing_gguf_file_is_an_error_event(tmp_path, facts):
    outcome = train_in_process(make_job(tmp_path / "job", tmp_path / "gone.gguf", facts))
    assert outcome.last.kind == "model_not_found" and "no such file" in outcome.last.message


def test_an_unknown_hub_id_offline_is_an_error_event(tmp_path, facts):
    outcome = train_in_process(make_job(tmp_path / "job", "nobody-here/no-such-model", facts))
    assert outcome.last.kind == "model_not_found"
    assert "nobody-here/no-such-model" in outcome.last.message


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot be read"),
        (b'{"messages": []}\n{broken\n', "line 2 of"),
        (b'{"prompt": "where is the text?"}\n', "neither a chat nor a text record"),
        (b"\n\n", "hold no records"),
    ],
)
def test_an_unreadable_dataset_is_an_error_event(tmp_path, tiny_model, content, says):
    records = tmp_path / "records.jsonl"
    if content is not None:
        records.write_bytes(content)
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, records))
    assert outcome.status == 3
    assert outcome.last.kind == "dataset_unreadable" and says in outcome.last.message


def test_a_dataset_with_nothing_to_learn_is_an_error_event(tmp_path, tiny_model):
    records = write_records(tmp_path / "d", [chat("hi", "hello", loss_weight=0.0)] * 4)
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, records))
    assert outcome.last.kind == "dataset_unreadable"
    assert "none of the 4 training records" in outcome.last.message


def test_out_of_memory_is_an_error_event_with_advice(tmp_path, tiny_model, facts, monkeypatch):
    from app.training.loop import StepRunner

    def exhausted(self, plan, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(StepRunner, "train_step", exhausted)
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, facts))
    assert outcome.status == 1
    error = outcome.last
    assert error.kind == "out_of_memory" and error.traceback is None
    assert "batch_size" in error.message and "LoRA instead of full" in error.message


def test_any_other_exception_is_an_error_event_with_its_traceback(
    tmp_path, tiny_model, facts, monkeypatch
):
    from app.training.loop import StepRunner

    def broken(self, plan, step):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(StepRunner, "train_step", broken)
    outcome = train_in_process(make_job(tmp_path / "job", tiny_model, facts))
    assert outcome.status == 1
    error = outcome.last
    assert error.kind == "internal" and "ZeroDivisionError: a bug" in error.message
    assert "Traceback" in error.traceback and "broken" in error.traceback


def test_a_tokenizer_without_a_chat_template_gets_chatml_written_into_the_adapter(
    tmp_path, tiny_model, facts
):
    import shutil

    base = tmp_path / "plain-base"
    shutil.copytree(tiny_model, base)
    (base / "chat_template.jinja").unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    outcome = train_in_process(make_job(tmp_path / "job", base, facts, max_steps=1))
    assert outcome.status == 0, outcome.last
    assert any("no chat template" in e.message for e in outcome.of("log"))
    assert "<|im_start|>" in (tmp_path / "job" / "adapter" / "chat_template.jinja").read_text()


def test_the_output_layer_on_learned_tokens_only_gives_the_losses_of_full_logits(
    tmp_path, tiny_model, facts, monkeypatch
):
    from app.training import loop

    shortcut = train_in_process(make_job(tmp_path / "a", tiny_model, facts, max_steps=4))
    monkeypatch.setattr(loop, "_PLAIN_HEADS", frozenset())
    full = train_in_process(make_job(tmp_path / "b", tiny_model, facts, max_steps=4))
    assert losses_by_step(shortcut) == pytest.approx(losses_by_step(full), rel=1e-5)


def test_a_gguf_base_is_converted_once_per_content_and_the_folder_reused(tmp_path, monkeypatch):
    from app.training import base_model

    converted: list[str] = []

    def convert(gguf, target):
        converted.append(gguf.name)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(base_model, "convert_gguf", convert)
    cache = tmp_path / "models"
    first = tmp_path / "a.gguf"
    first.write_bytes(b"GGUF" + b"\0" * 100)
    folder = base_model.resolve_base(str(first), cache)
    assert base_model.resolve_base(str(first), cache) == folder
    copy = tmp_path / "copy-of-a.gguf"
    copy.write_bytes(first.read_bytes())
    assert base_model.resolve_base(str(copy), cache) == folder  # keyed by content, not name
    first.write_bytes(b"GGUF" + b"\1" * 100)
    assert base_model.resolve_base(str(first), cache) != folder  # changed content: converted anew
    assert converted == ["a.gguf", "a.gguf"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_the_schedules_are_those_of_transformers():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from app.jobs.spec import TrainingHyperparameters
    from app.training.loop import make_scheduler

    for name, theirs in (
        ("cosine", get_cosine_schedule_with_warmup),
        ("linear", get_linear_schedule_with_warmup),
    ):
        weight = [torch.nn.Parameter(torch.zeros(1))]
        ours_optimizer, their_optimizer = (
            torch.optim.SGD(weight, lr=1.0),
            torch.optim.SGD(weight, lr=1.0),
        )
        ours = make_scheduler(
            ours_optimizer, TrainingHyperparameters(warmup_ratio=0.1, scheduler=name), 50
        )
        reference = theirs(their_optimizer, 5, 50)
        for _ in range(50):
            assert ours.get_last_lr() == pytest.approx(reference.get_last_lr(), abs=1e-12)
            for optimizer, scheduler in ((ours_optimizer, ours), (their_optimizer, reference)):
                optimizer.step()
                scheduler.step()
