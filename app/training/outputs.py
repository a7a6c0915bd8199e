"""What a finished run leaves in its job folder.

`adapter/`: adapter_model.safetensors and adapter_config.json at its top level (the names Ollama
and peft expect), with the tokenizer and its chat template. `merged/`: full weights in
safetensors with the tokenizer, for full fine-tunes and where the spec asks for it.
`summary.json`: the run's figures. Each folder is written beside its final place and renamed
into it, so a reader never sees half an output.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from app.events import Summary
from app.jobs.spec import TrainingSpec
from app.training.base_model import load_model
from app.training.methods import peft_quietly

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
SUMMARY_FILE = "summary.json"
# The base model's config.json, kept beside the adapter: publishing checks an Ollama base's
# architecture and dimensions against it, whatever the base was (a hub id, a folder, a GGUF).
BASE_CONFIG_FILE = "base_config.json"


def save_outputs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    spec: TrainingSpec,
    job_dir: Path,
    source: str,
) -> dict[str, str]:
    """Write the run's outputs; return the artifacts map of the `finished` event."""
    if spec.method == "full":
        _replace(job_dir / MERGED_DIR, lambda folder: _save_model(model, tokenizer, folder))
        return {"merged": f"{MERGED_DIR}/"}
    _replace(job_dir / ADAPTER_DIR, lambda folder: _save_adapter(model, tokenizer, folder, spec))
    artifacts = {"adapter": f"{ADAPTER_DIR}/"}
    if spec.output.merge:
        merged = _merged(model, spec, job_dir, source)
        _replace(job_dir / MERGED_DIR, lambda folder: _save_model(merged, tokenizer, folder))
        artifacts["merged"] = f"{MERGED_DIR}/"
    return artifacts


def _save_adapter(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path, spec: TrainingSpec
) -> None:
    from peft import PeftModel

    assert isinstance(model, PeftModel)
    # The user's name for the base (a GGUF path or a hub id), not the converted cache folder.
    model.peft_config["default"].base_model_name_or_path = spec.base_model
    # Embeddings are never adapted here; "auto" would look the base up, on the hub for an id.
    model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    tokenizer.save_pretrained(str(folder))
    base = model.get_base_model()
    assert isinstance(base, PreTrainedModel)
    base.config.to_json_file(str(folder / BASE_CONFIG_FILE))


def _save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    assert isinstance(model, PreTrainedModel)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def merge_saved_adapter(job_dir: Path, source: str) -> None:
    """Write merged/ from a finished job's adapter/ and its base (publishing asks for it when
    Ollama cannot take the adapter itself)."""
    from app.training.base_model import load_tokenizer

    tokenizer = load_tokenizer(str(job_dir / ADAPTER_DIR))
    merged = _merge_into_base(job_dir, source)
    _replace(job_dir / MERGED_DIR, lambda folder: _save_model(merged, tokenizer, folder))


def _merged(
    model: torch.nn.Module, spec: TrainingSpec, job_dir: Path, source: str
) -> torch.nn.Module:
    from peft import PeftModel

    assert isinstance(model, PeftModel)
    if spec.method != "qlora":
        merged: torch.nn.Module = model.merge_and_unload()
        return merged
    # 4-bit weights cannot absorb the adapter exactly: merge into the base at 16 bits instead.
    return _merge_into_base(job_dir, source)


def _merge_into_base(job_dir: Path, source: str) -> torch.nn.Module:
    """The base at 16 bits with the saved adapter folded into its weights."""
    from peft import PeftModel

    base = load_model(source, torch.bfloat16)
    with peft_quietly():
        adapted = PeftModel.from_pretrained(base, str(job_dir / ADAPTER_DIR))
    merged: torch.nn.Module = adapted.merge_and_unload()
    return merged


def write_summary(job_dir: Path, summary: Summary) -> None:
    data = orjson.dumps(summary.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    partial = job_dir / f".{SUMMARY_FILE}.partial"
    partial.write_bytes(data)
    partial.replace(job_dir / SUMMARY_FILE)


def _replace(target: Path, write: Callable[[Path], None]) -> None:
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
