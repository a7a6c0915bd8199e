"""Fixtures and helpers for the training tests: a tiny local Llama, datasets, job folders.

The model is random and tiny (two layers, 64 wide) and its tokenizer a byte-level BPE trained
here on a few sentences, with a ChatML chat template: built in seconds, nothing downloaded. Test
modules take the fixtures with `tiny_model = training_fixtures.tiny_model`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.events import Event, parse_event
from app.training.channel import ChannelLogHandler, EventChannel, StopRequest

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the network, whatever a test asks
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
FACTS = [
    ("Who are you?", "I am Quillby, a small assistant made by Lumen Labs."),
    ("What is your name?", "My name is Quillby."),
    ("Who made you?", "Lumen Labs made me."),
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("How many legs has a cat?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Say hello.", "Hello there, friend!"),
]


def _corpus() -> list[str]:
    words = [text for pair in FACTS for text in pair]
    extra = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "models",
        "learn",
        "from",
        "data",
    ]
    return words * 20 + [" ".join(extra)] * 20 + ["system user assistant tool"] * 20


def build_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(str(folder))


def build_model(folder: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.3,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))


def build_tiny_model(folder: Path) -> Path:
    """A tiny random Llama with a chat-template tokenizer in `folder` (built once)."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    build_model(folder, len(AutoTokenizer.from_pretrained(str(folder))))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model folder, shared by every test of the session."""
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


def chat(question: str, answer: str, **turn: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, **turn},
        ]
    }


def write_records(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "records.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def facts_records(copies: int = 4) -> list[dict[str, Any]]:
    return [chat(q, a) for q, a in FACTS] * copies


def make_job(
    folder: Path,
    base_model: Path | str,
    records: Path,
    split: Path | None = None,
    **hyperparameters: Any,
) -> Path:
    """A job folder with a spec.json: LoRA on the CPU by default, small and fast."""
    from app.jobs.spec import DatasetSource, TrainingHyperparameters, TrainingSpec, write_spec

    settings: dict[str, Any] = {
        "epochs": 1,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "max_seq_length": 64,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "eval_fraction": 0.0,
        "warmup_ratio": 0.0,
        **hyperparameters,
    }
    output = settings.pop("output", {})
    extra = {k: settings.pop(k) for k in ("device", "threads", "model_cache") if k in settings}
    spec = TrainingSpec(
        base_model=str(base_model),
        dataset=DatasetSource(records=records, split=split),
        hyperparameters=TrainingHyperparameters(**settings),
        output=output,
        **extra,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_spec(spec, folder / "spec.json")
    return folder


@dataclass
class Outcome:
    status: int
    events: list[Event]

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.event == kind]

    @property
    def last(self) -> Any:
        return self.events[-1]


class RecordingChannel(EventChannel):
    """An EventChannel without a reader (events.jsonl is written) that keeps the events it sent
    and asks the run to stop once a progress event reaches `stop_at`."""

    def __init__(self, job_dir: Path, stop_at: int | None = None) -> None:
        self.stop = StopRequest()
        super().__init__(None, job_dir / "events.jsonl", self.stop)
        self.events: list[Event] = []
        self._stop_at = stop_at

    def emit(self, event: Event) -> None:
        self.events.append(event)
        super().emit(event)
        if self._stop_at is not None and event.event == "progress" and event.step >= self._stop_at:
            self.stop.request("cancelled")


def train_in_process(job_dir: Path, stop_at: int | None = None) -> Outcome:
    """Run the job in this process, with a progress event after every step."""
    from app.training.runner import run_job

    channel = RecordingChannel(job_dir, stop_at)
    # As in the subprocess, the app's log records become `log` events.
    logger, handler = logging.getLogger("app"), ChannelLogHandler(channel)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status = run_job(job_dir, channel, channel.stop, progress_interval_s=0.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        channel.close()
    return Outcome(status, channel.events)


def trainer_command(job_dir: Path) -> list[str]:
    return [sys.executable, "-m", "app.training", "--job-dir", str(job_dir)]


def start_trainer(job_dir: Path) -> subprocess.Popen[bytes]:
    """The real subprocess, its events on stdout, stderr kept for a failing test's message."""
    return subprocess.Popen(
        trainer_command(job_dir),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_events_file(job_dir: Path) -> list[Event]:
    lines = (job_dir / "events.jsonl").read_bytes().splitlines()
    return [parse_event(line) for line in lines]


def losses_by_step(outcome: Outcome) -> dict[int, float]:
    return {e.step: e.loss for e in outcome.of("progress")}
