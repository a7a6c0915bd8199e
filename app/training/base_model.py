"""The base model: found (a Hugging Face id, a folder, a GGUF file), converted once, loaded.

transformers loads a GGUF file by dequantizing every tensor, flags the result as quantized, and
then refuses to train or save it. A GGUF base is therefore rebuilt once as a plain model from its
dequantized weights and kept as an ordinary model folder in the cache, keyed by the file's hash;
later runs load that folder, which takes a fraction of the time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import orjson
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from app.paths import resolve_data_home
from app.training.errors import TrainingError

log = logging.getLogger(__name__)

CONVERTED_PREFIX = "gguf-"
_INDEX_FILE = "gguf-index.json"  # path, size and mtime -> sha256, so a file is hashed once
_HASH_CHUNK = 1 << 22


def model_cache_root(explicit: Path | None) -> Path:
    """Where converted bases live: the spec's choice, or the data folder's `models/`."""
    return explicit if explicit is not None else resolve_data_home().root / "models"


def resolve_base(base_model: str, cache_root: Path) -> str:
    """A name or folder from_pretrained can load: GGUF files are converted (once) first."""
    path = Path(base_model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise _not_found(base_model, "no such file")
        return str(converted_folder(path.resolve(), cache_root))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _not_found(base_model, "the folder has no config.json")
        return str(path.resolve())
    if path.is_absolute() or base_model.startswith((".", "~")):
        raise _not_found(base_model, "no such folder")
    return base_model  # a Hugging Face id, fetched through its usual cache


def converted_folder(gguf: Path, cache_root: Path) -> Path:
    """The plain model folder for `gguf`, converting it on first use."""
    target = cache_root / f"{CONVERTED_PREFIX}{file_sha256(gguf, cache_root)[:24]}"
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_root))
    try:
        log.info("converting %s to a trainable model (once; later runs reuse it)", gguf.name)
        convert_gguf(gguf, staging)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` and save it, with its tokenizer, as a plain model folder."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError) as error:
        raise _not_found(str(gguf), _first_line(error)) from error
    plain = _plain_copy(quantized)
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _plain_copy(quantized: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model transformers does not consider quantized."""
    config = type(quantized.config).from_dict(
        {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    )
    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        plain: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=torch.float32
        )
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    return plain


def _publish(staging: Path, target: Path) -> None:
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        # Another run converted the same file meanwhile; its copy is as good as ours.


def file_sha256(path: Path, cache_root: Path) -> str:
    """The file's sha256, remembered by path, size and mtime so a large file is read once."""
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    index = _read_index(cache_root)
    if key not in index:
        index[key] = _hash_file(path)
        _write_index(cache_root, index)
    return index[key]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_index(cache_root: Path) -> dict[str, str]:
    try:
        data = orjson.loads((cache_root / _INDEX_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_index(cache_root: Path, index: dict[str, str]) -> None:
    # Written whole and replaced: a lost update from a concurrent run only costs a re-hash.
    cache_root.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".index-", dir=cache_root)
    with os.fdopen(handle, "wb") as file:
        file.write(orjson.dumps(index))
    os.replace(temporary, cache_root / _INDEX_FILE)


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as error:
        raise _not_found(source, _first_line(error)) from error
    if not tokenizer.is_fast:
        raise TrainingError(
            "model_not_found",
            f"the tokenizer of {source} has no fast (Rust) version, which training needs to "
            "find the assistant's tokens: choose a base model with a tokenizer.json.",
        )
    return tokenizer


def load_model(source: str, dtype: torch.dtype, **options: object) -> PreTrainedModel:
    """The causal language model at `source`, its weights in `dtype`."""
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
    except (OSError, ValueError, KeyError) as error:
        raise _not_found(source, _first_line(error)) from error
    model.config.use_cache = False  # the key/value cache only serves generation
    return model


def _not_found(base_model: str, why: str) -> TrainingError:
    return TrainingError(
        "model_not_found",
        f"the base model {base_model} cannot be loaded ({why}): check the name or path, and for "
        "a Hugging Face id that it was downloaded or that the network is reachable.",
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text.rstrip(".")[:300]
