"""How much memory a training run will need, estimated before it starts and without torch.

The model's shape comes from its `config.json` (a local folder, or a Hugging Face id already in
the local cache) or from a GGUF file's header; where the header cannot be read, from the GGUF
file's size. The arithmetic is the trainer's own (app.training.methods.estimated_training_bytes):
gradients and AdamW moments of the trainable weights, the activations each block keeps for the
backward pass, and the logits of the longest micro-batch, plus the weights themselves. It is an
estimate: real use depends on the data's lengths, the allocator and the libraries.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from app.errors import KnownError
from app.settings import Method

EstimateDevice = Literal["cpu", "cuda"]

_ADAM_BYTES = 8  # two fp32 moments per trainable weight
_GRAD_BYTES = 4
_LOGIT_BYTES = 4 * 3  # fp32 logits, their log-softmax, their gradient
_RUNTIME_BYTES = 600 * 1024**2  # Python, torch and the tokenizer, before any weight
_FOUR_BIT_BYTES = 0.5 + 0.0625  # NF4 weights and their scales
_GGUF_MAGIC = b"GGUF"
# Bits per weight of the common GGUF quantisations, to count parameters from a file size.
_GGUF_BITS = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_K_M": 4.85,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "Q3_K_M": 3.91,
    "Q2_K": 3.35,
}
_GGUF_DEFAULT_BITS = 4.85  # Q4_K_M, the usual download


class EstimateUnavailable(KnownError):
    """The model's shape cannot be found, so there is nothing to estimate from."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a base model."""

    parameters: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    source: str  # where the shape was read: "config.json", "the GGUF header", ...


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part; `checkpointed_bytes` is the total with gradient
    checkpointing, which the trainer turns on by itself when the run would not fit."""

    weights_bytes: int
    training_bytes: int
    activation_bytes: int
    runtime_bytes: int
    checkpointed_bytes: int
    trainable_parameters: int
    shape: ModelShape
    device: EstimateDevice

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.training_bytes + self.activation_bytes + self.runtime_bytes

    def sentence(self) -> str:
        """The estimate in words, saying that it is one."""
        where = "GPU memory" if self.device == "cuda" else "RAM"
        return (
            f"About {gigabytes(self.total_bytes)} of {where} (an estimate, from "
            f"{self.shape.source}): weights {gigabytes(self.weights_bytes)}, gradients and "
            f"optimizer {gigabytes(self.training_bytes)}, activations at the longest sequences "
            f"{gigabytes(self.activation_bytes)}. With gradient checkpointing, which the trainer "
            f"turns on when memory is short, about {gigabytes(self.checkpointed_bytes)}."
        )


def gigabytes(count: float) -> str:
    if count < 1024**2:
        return "under 1 MB"
    if count < 1024**3:
        return f"{count / 1024**2:,.0f} MB"
    return f"{count / 1024**3:,.1f} GB"


def likely_device(method: Method) -> EstimateDevice:
    """Where a run with `method` will probably train, guessed without importing torch."""
    if method == "qlora" or Path("/proc/driver/nvidia/gpus").is_dir():
        return "cuda"
    return "cpu"


def estimate_memory(
    base_model: str,
    method: Method,
    *,
    batch_size: int,
    max_seq_length: int,
    lora_r: int,
    gradient_accumulation_steps: int = 1,
    device: EstimateDevice = "cpu",
) -> MemoryEstimate:
    """The memory a run of `base_model` needs; EstimateUnavailable when its shape is unknown."""
    shape = model_shape(base_model)
    tokens = -(-batch_size // max(1, gradient_accumulation_steps)) * max_seq_length
    trainable = shape.parameters if method == "full" else _lora_parameters(shape, lora_r)
    element = 2 if device == "cuda" else 4  # bf16 autocast on CUDA, fp32 on the CPU
    per_block = (6 * shape.hidden + 4 * shape.intermediate) * element
    logits = tokens * shape.vocab * _LOGIT_BYTES
    checkpointed = tokens * (shape.layers * shape.hidden * element + per_block) + logits
    activations = tokens * shape.layers * per_block + logits
    weights = int(shape.parameters * _weight_bytes(method, device))
    training = trainable * (_GRAD_BYTES + _ADAM_BYTES)
    return MemoryEstimate(
        weights_bytes=weights,
        training_bytes=training,
        activation_bytes=activations,
        runtime_bytes=_RUNTIME_BYTES,
        checkpointed_bytes=weights + training + checkpointed + _RUNTIME_BYTES,
        trainable_parameters=trainable,
        shape=shape,
        device=device,
    )


def _weight_bytes(method: Method, device: EstimateDevice) -> float:
    if method == "qlora":
        return _FOUR_BIT_BYTES
    if device == "cuda" and method != "full":  # full keeps fp32 master weights
        return 2.0
    return 4.0


def _lora_parameters(shape: ModelShape, rank: int) -> int:
    # A and B of each of the seven projections, at most hidden + intermediate wide.
    return shape.layers * 7 * rank * (shape.hidden + shape.intermediate)


# --- the model's shape ------------------------------------------------------------------------


def model_shape(base_model: str) -> ModelShape:
    """The shape of a model folder, a GGUF file or a cached Hugging Face id."""
    text = base_model.strip()
    if not text:
        raise EstimateUnavailable("Choose a base model to see how much memory the run needs.")
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return _gguf_shape(path)
    if path.is_dir():
        return _config_shape(path / "config.json", "its config.json")
    if path.is_absolute() or text.startswith((".", "~")):
        raise EstimateUnavailable(f"There is no model folder or GGUF file at {text}.")
    cached = _cached_config(text)
    if cached is None:
        raise EstimateUnavailable(
            f"No estimate for {text} yet: its config.json is not on this machine (it is "
            "downloaded when the job starts)."
        )
    return _config_shape(cached, "its config.json in the Hugging Face cache")


def _config_shape(path: Path, source: str) -> ModelShape:
    try:
        config = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise EstimateUnavailable(f"{path} cannot be read as a model's config.json.") from None
    if isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}  # a multimodal model's language half
    if not isinstance(config, dict):
        raise EstimateUnavailable(f"{path} is not a model's config.json.")
    return _shape_from_config(config, source, path)


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _shape_from_config(config: dict[str, Any], source: str, path: Path) -> ModelShape:
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim")
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    vocab = _first_int(config, "vocab_size", "padded_vocab_size")
    if hidden is None or layers is None or vocab is None:
        raise EstimateUnavailable(f"{path} does not say the model's size (hidden size, layers).")
    intermediate = _first_int(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    heads = _first_int(config, "num_attention_heads", "n_head", "num_heads") or 1
    kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _first_int(config, "head_dim") or hidden // heads
    gated = config.get("model_type") not in {"gpt2", "gpt_neo", "gptj", "opt", "bloom", "falcon"}
    tied = bool(config.get("tie_word_embeddings", True))
    parameters = _count_parameters(
        hidden, intermediate, layers, vocab, (heads, kv_heads, head_dim), gated=gated, tied=tied
    )
    return ModelShape(parameters, hidden, intermediate, layers, vocab, source)


def _count_parameters(
    hidden: int,
    intermediate: int,
    layers: int,
    vocab: int,
    heads: tuple[int, int, int],
    *,
    gated: bool,
    tied: bool,
) -> int:
    query_heads, kv_heads, head_dim = heads
    attention = hidden * head_dim * (2 * query_heads + 2 * kv_heads)
    mlp = (3 if gated else 2) * hidden * intermediate
    block = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if tied else 2)
    return layers * block + embeddings + hidden


def _cached_config(model_id: str) -> Path | None:
    """config.json of `model_id` in the local Hugging Face cache (newest snapshot), if any."""
    folder = _hub_cache() / f"models--{model_id.replace('/', '--')}" / "snapshots"
    try:
        found = [p for p in folder.glob("*/config.json") if p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


# --- GGUF --------------------------------------------------------------------------------------


def _gguf_shape(path: Path) -> ModelShape:
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            metadata = read_gguf_metadata(file)
    except OSError as error:
        raise EstimateUnavailable(f"{path} cannot be read ({error.strerror}).") from None
    except (ValueError, struct.error, UnicodeDecodeError):
        metadata = {}
    shape = _shape_from_gguf(metadata)
    return shape if shape is not None else _shape_from_size(path, size)


def _shape_from_gguf(metadata: dict[str, Any]) -> ModelShape | None:
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return None
    config = {
        "hidden_size": metadata.get(f"{arch}.embedding_length"),
        "num_hidden_layers": metadata.get(f"{arch}.block_count"),
        "intermediate_size": metadata.get(f"{arch}.feed_forward_length"),
        "num_attention_heads": metadata.get(f"{arch}.attention.head_count"),
        "num_key_value_heads": metadata.get(f"{arch}.attention.head_count_kv"),
        "vocab_size": metadata.get(f"{arch}.vocab_size") or metadata.get("tokenizer.ggml.tokens"),
        "model_type": "gpt2" if arch == "gpt2" else "llama",
        "tie_word_embeddings": False,
    }
    try:
        return _shape_from_config(config, "the GGUF file's header", Path(arch))
    except EstimateUnavailable:
        return None


def _shape_from_size(path: Path, size: int) -> ModelShape:
    """A shape guessed from the file size, its quantisation and a typical depth-to-width."""
    match = re.search(r"(?i)(BF16|F16|F32|Q\d_K_[MS]|Q\d_K|Q\d_\d)", path.name)
    quantisation = match.group(1).upper() if match else None
    bits = _GGUF_BITS.get(quantisation or "", _GGUF_DEFAULT_BITS)
    parameters = int(size * 8 / bits)
    # Decoder LLMs have about 12 * layers * hidden^2 weights with layers near hidden / 128.
    hidden = max(64, round((parameters * 128 / 12) ** (1 / 3) / 64) * 64)
    layers = max(1, hidden // 128)
    source = f"the GGUF file's size ({quantisation or 'Q4_K_M assumed'})"
    return ModelShape(parameters, hidden, int(hidden * 2.7), layers, 32_000, source)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_TOKENS_KEY = "tokenizer.ggml.tokens"


def read_gguf_metadata(file: BinaryIO) -> dict[str, Any]:
    """The scalar metadata of a GGUF file; an array's value is its length. ValueError when the
    file is not GGUF. Stops at the token list, after which nothing the estimate needs follows."""
    if file.read(4) != _GGUF_MAGIC:
        raise ValueError("not a GGUF file")
    version = _unpack(file, "<I")
    if version < 2:
        raise ValueError("GGUF version 1 is not supported")
    _unpack(file, "<Q")  # tensor count
    metadata: dict[str, Any] = {}
    for _ in range(_unpack(file, "<Q")):
        key, kind = _read_string(file), _unpack(file, "<I")
        if key == _TOKENS_KEY and kind == _ARRAY:
            _unpack(file, "<I")  # the element type: strings
            metadata[key] = _unpack(file, "<Q")
            break
        metadata[key] = _read_value(file, kind)
    return metadata


def _read_value(file: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _unpack(file, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(file)
    if kind == _ARRAY:
        element, count = _unpack(file, "<I"), _unpack(file, "<Q")
        _skip_array(file, element, count)
        return count
    raise ValueError(f"unknown GGUF value type {kind}")


def _skip_array(file: BinaryIO, element: int, count: int) -> None:
    if element in _SCALARS:
        file.seek(struct.calcsize(_SCALARS[element]) * count, os.SEEK_CUR)
        return
    for _ in range(count):
        _read_value(file, element)


def _read_string(file: BinaryIO) -> str:
    length = _unpack(file, "<Q")
    if length > 1 << 20:
        raise ValueError("a GGUF string longer than a megabyte")
    return file.read(length).decode("utf-8")


def _unpack(file: BinaryIO, layout: str) -> Any:
    size = struct.calcsize(layout)
    data = file.read(size)
    if len(data) != size:
        raise ValueError("the GGUF header ends early")
    return struct.unpack(layout, data)[0]
