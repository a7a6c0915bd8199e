"""Publishing (and evaluating) real tiny-model jobs to the stand-in Ollama: the adapter route
for a llama base, the merged route (a real merge subprocess) for a qwen2 base and where Ollama
refuses the adapter, the template and stop tokens, the checks, and `mtm ollama ...`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import orjson
import pytest

from app.context import AppContext
from app.errors import BadInputError, ConflictError, KnownError
from app.ollama.client import OllamaClient
from app.ollama.publish import Publisher, PublishRequest, publications
from app.ollama.template import derive_template
from tests import training_fixtures
from tests.conftest import run_app
from tests.training_fixtures import FACTS

tiny_model = training_fixtures.tiny_model
FAST = {
    "max_seq_length": 64,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "epochs": 1,
    "eval_fraction": 0.25,  # a validation split for the evaluation test
}
TINY = {"embedding_length": 64, "block_count": 2, "head_count": 4, "head_count_kv": 2}


def build_tiny_qwen(folder: Path, llama: Path) -> Path:
    """A tiny random Qwen2 with the tiny Llama's tokenizer: an architecture Ollama takes only
    as merged weights."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    tokenizer.save_pretrained(str(folder))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model):
    """A data folder with two completed LoRA jobs (a llama and a qwen2 base), trained once for
    the session by the real headless worker (the window's publish tests use it too)."""
    from app.datasets.importer import ImportOptions, import_dataset
    from app.jobs.service import NewJob, create_job

    root = tmp_path_factory.mktemp("publish-home")
    qwen = build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen") / "model", tiny_model)
    context = AppContext.open(root)
    try:
        data = tmp_path_factory.mktemp("facts") / "facts.jsonl"
        rows = [{"instruction": q, "output": a} for q, a in FACTS] * 4
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        dataset = import_dataset(context.database, context.home, data, ImportOptions(name="facts"))
        jobs = {}
        for key, base in (("llama", tiny_model), ("qwen", qwen)):
            new = NewJob(dataset.id, str(base), name=key, hyperparameters=FAST)
            jobs[key] = create_job(context.database, context.home, context.settings.load(), new).id
    finally:
        context.close()
    result = run_app("worker", "run", "--until-idle", home=root)
    assert result.returncode == 0, result.stderr
    return root, jobs


@pytest.fixture
def published(trained, tmp_path):
    """A private copy of the trained data folder, opened."""
    root, jobs = trained
    copy = tmp_path / "home"
    shutil.copytree(root, copy)
    context = AppContext.open(copy)
    yield context, jobs
    context.close()


def publish(context, server, request: PublishRequest, lines: list[str] | None = None):
    async def main():
        async with OllamaClient(server.url) as client:
            publisher = Publisher(
                client,
                context.database,
                context.home,
                on_status=None if lines is None else lines.append,
            )
            return await publisher.publish(request)

    return asyncio.run(main())


def test_a_llama_job_is_published_with_its_adapter_template_and_stops(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    lines: list[str] = []
    result = publish(
        context,
        ollama_server,
        PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base"),
        lines,
    )
    assert result.route == "adapter" and result.base == "tiny-base"
    assert result.reply  # it answered the verification prompt
    model = ollama_server.model("facts-tuned")
    assert model.adapters and model.parent_model == "tiny-base:latest"
    adapter_dir = context.home.jobs / jobs["llama"] / "adapter"
    expected = derive_template(adapter_dir)
    assert model.template == expected.template
    assert "<|im_end|>" in model.parameters["stop"]
    assert "converting adapter" in lines and "success" in lines
    # The adapter_config.json sent has an integer lora_alpha (Ollama refuses 16.0).
    create = next(r for r in ollama_server.requests if r.path == "/api/create")
    config_blob = ollama_server.blob_path(create.json["adapters"]["adapter_config.json"])
    assert isinstance(orjson.loads(config_blob.read_bytes())["lora_alpha"], int)
    [record] = publications(context.database, jobs["llama"])
    assert (record.ollama_model, record.route, record.ollama_base) == (
        "facts-tuned",
        "adapter",
        "tiny-base",
    )


def test_a_qwen2_job_is_merged_by_a_subprocess_and_imported(published, ollama_server):
    context, jobs = published
    ollama_server.add_model(
        "tinyqwen", family="qwen2", **TINY, vocab_size=len_vocab(context, jobs["qwen"])
    )
    lines: list[str] = []
    request = PublishRequest(jobs["qwen"], "facts-qwen", base="tinyqwen", quantize="q8_0")
    result = publish(context, ollama_server, request, lines)
    assert result.route == "merged"
    merged = context.home.jobs / jobs["qwen"] / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("model*.safetensors"))
    model = ollama_server.model("facts-qwen")
    assert "config.json" in model.files and not model.adapters
    assert model.family == "qwen2" and model.quantization_level.upper() == "Q8_0"
    expected = derive_template(context.home.jobs / jobs["qwen"] / "adapter")
    assert model.template == expected.template
    assert list(expected.stop) == model.parameters["stop"]
    assert any(line.startswith("Merging the adapter") for line in lines)
    assert publications(context.database, jobs["qwen"])[0].route == "merged"


def test_a_server_that_refuses_the_adapter_gets_the_merged_model(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    ollama_server.fail_during_stream("/api/create", "adapters are not supported any more")
    result = publish(
        context, ollama_server, PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base")
    )
    assert result.route == "merged"
    assert any("publishing the merged model instead" in note for note in result.notes)
    assert "config.json" in ollama_server.model("facts-tuned").files


def test_a_base_of_another_shape_is_refused_and_nothing_is_made(published, ollama_server):
    context, jobs = published
    # The fixture's smollm2:135m is a llama too, but 576 wide and 30 layers deep.
    with pytest.raises(BadInputError) as refused:
        publish(
            context, ollama_server, PublishRequest(jobs["llama"], "facts-x", base="smollm2:135m")
        )
    assert refused.value.message.startswith(
        "The fine-tune was trained on a llama model with 2 layers, but smollm2:135m has 30. "
        "The fine-tune was trained on a llama model with a hidden size of 64, but smollm2:135m "
        "has 576."
    )
    assert not _made(ollama_server, "facts-x")
    assert publications(context.database, jobs["llama"]) == []


def test_a_name_that_exists_or_is_invalid_is_refused(published, ollama_server):
    context, jobs = published
    with pytest.raises(ConflictError, match="already has a model named smollm2:135m"):
        publish(context, ollama_server, PublishRequest(jobs["llama"], "smollm2:135m"))
    with pytest.raises(BadInputError, match="not a usable Ollama model name"):
        publish(context, ollama_server, PublishRequest(jobs["llama"], "no spaces please"))


def _made(server, name: str) -> list[str]:
    """The models of that name, or staged for it, in the server's store."""
    return [model for model in server.model_names() if model.startswith(name)]


def test_a_model_that_fails_its_check_leaves_nothing(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    ollama_server.fail_before_stream("/api/generate", 500, "llama runner process has terminated")
    with pytest.raises(KnownError, match="llama runner process has terminated"):
        publish(
            context, ollama_server, PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base")
        )
    assert not _made(ollama_server, "facts-tuned")
    assert publications(context.database, jobs["llama"]) == []


def test_a_failed_replacement_keeps_the_old_model(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    ollama_server.add_model("facts-tuned")
    before = ollama_server.model("facts-tuned").digest
    ollama_server.fail_during_stream("/api/create", "no space left on device")
    request = PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base", replace=True)
    with pytest.raises(KnownError, match="no space left on device"):
        publish(context, ollama_server, request)
    assert ollama_server.model("facts-tuned").digest == before
    assert _made(ollama_server, "facts-tuned") == ["facts-tuned:latest"]


def test_a_cancelled_publish_leaves_nothing(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    ollama_server.slow_first_byte("/api/create", 3.0)
    lines: list[str] = []

    async def main():
        async with OllamaClient(ollama_server.url) as client:
            publisher = Publisher(client, context.database, context.home, on_status=lines.append)
            request = PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base")
            task = asyncio.create_task(publisher.publish(request))
            while not any(line.startswith("Uploaded") for line in lines):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # the create is waiting for its first byte now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert not _made(ollama_server, "facts-tuned")
    assert publications(context.database, jobs["llama"]) == []


def test_the_cli_publishes_and_reports_status(published, ollama_server):
    context, jobs = published
    ollama_server.add_model("tiny-base", **TINY, vocab_size=len_vocab(context, jobs["llama"]))
    home = context.home.root
    status = run_app("ollama", "status", "--url", ollama_server.url, "--json", home=home)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    done = run_app(
        "ollama",
        "publish",
        jobs["llama"],
        "--name",
        "facts-cli",
        "--base",
        "tiny-base",
        "--url",
        ollama_server.url,
        "--json",
        home=home,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["route"] == "adapter"
    evaluated = run_app(
        "ollama",
        "evaluate",
        jobs["llama"],
        "--examples",
        "3",
        "--url",
        ollama_server.url,
        "--json",
        home=home,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["examples"] == 3 and scores["tuned_model"] == "facts-cli"
    assert scores["base_model"] == "tiny-base" and scores["tokens_per_second_tuned"] > 0
    listed = run_app("ollama", "list", "--url", ollama_server.url, "--json", home=home)
    assert "facts-cli:latest" in [m["name"] for m in json.loads(listed.stdout)]
    ollama_server.stop()
    down = run_app("ollama", "status", "--url", ollama_server.url, home=home)
    assert down.returncode == 1
    assert "not running" in down.stderr and len(down.stderr.strip().splitlines()) == 1


def len_vocab(context, job_id: str) -> int:
    config = context.home.jobs / job_id / "adapter" / "base_config.json"
    return int(orjson.loads(config.read_bytes())["vocab_size"])


def test_the_quantisations_offered_are_the_ones_publishing_knows():
    from app.cli import build_parser
    from app.ollama.publish import QUANTISATIONS
    from ui.publish_dialog import QUANTISATIONS as OFFERED

    parser = build_parser()
    publish_parser = parser._subparsers._group_actions[0].choices["ollama"]
    action = next(
        a
        for a in publish_parser._subparsers._group_actions[0].choices["publish"]._actions
        if a.dest == "quantize"
    )
    assert list(action.choices) == list(QUANTISATIONS)
    assert [key for key, _text in OFFERED if key] == ["q8_0", "q4_K_M", "q4_K_S", "f16"]
    assert set(QUANTISATIONS) == {key for key, _text in OFFERED if key}


def test_without_a_chat_template_the_base_template_is_used_and_said(published, ollama_server):
    context, jobs = published
    adapter = context.home.jobs / jobs["llama"] / "adapter"
    (adapter / "chat_template.jinja").unlink()
    config = orjson.loads((adapter / "tokenizer_config.json").read_bytes())
    config.pop("chat_template", None)
    (adapter / "tokenizer_config.json").write_bytes(orjson.dumps(config))
    base_template = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}<assistant>"
    ollama_server.add_model(
        "tiny-base",
        **TINY,
        vocab_size=len_vocab(context, jobs["llama"]),
        template=base_template,
        parameters={"stop": ["<user>"]},
    )
    result = publish(
        context, ollama_server, PublishRequest(jobs["llama"], "facts-tuned", base="tiny-base")
    )
    assert any("base model's own template is used instead" in note for note in result.notes)
    model = ollama_server.model("facts-tuned")
    assert model.template == base_template and model.parameters["stop"] == ["<user>"]
