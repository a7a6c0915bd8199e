"""Which Ollama model is the base of a fine-tune, and whether a LoRA adapter fits it.

A LoRA adapter is published on top of an Ollama model (`from` plus `adapters` in /api/create), so
that model must be the one the adapter was trained on: same architecture, same dimensions.
`suggest_bases` offers Ollama tags for the fine-tune's base (by name, else by shape),
`check_base` compares the base's config.json with what /api/show says about an Ollama model, and
`adapter_config_for_ollama` rewrites peft's adapter_config.json into what Ollama's converter reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import BadInputError

# config.json "architectures"[0] -> the GGUF architecture Ollama and llama.cpp call it by.
_GGUF_ARCH = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",  # llama.cpp converts Mistral 7B to the llama architecture
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2MoeForCausalLM": "qwen2moe",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Phi3ForCausalLM": "phi3",
    "PhiForCausalLM": "phi2",
    "GPT2LMHeadModel": "gpt2",
    "StableLmForCausalLM": "stablelm",
    "Starcoder2ForCausalLM": "starcoder2",
    "CohereForCausalLM": "command-r",
    "GraniteForCausalLM": "granite",
    "OlmoForCausalLM": "olmo",
}
# config.json "model_type" -> GGUF architecture, for configs without (known) "architectures".
_GGUF_ARCH_OF_TYPE = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "phi": "phi2",
    "gpt2": "gpt2",
}
# Ollama converts safetensors LoRA adapters only onto these base architectures (convert.go).
ADAPTER_ARCHITECTURES = frozenset({"llama", "gemma2"})
# The modules Ollama's adapter converter maps to GGUF tensor names.
ADAPTER_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
)


@dataclass(frozen=True)
class BaseShape:
    """What the fine-tune's base looks like, from its Hugging Face config.json."""

    architecture: str  # the GGUF/Ollama family name: "llama", "qwen2", "gemma2", ...
    hf_architecture: str  # e.g. "LlamaForCausalLM"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    context_length: int | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BaseShape:
        """The shape in a config.json's content; BadInputError when a dimension is missing."""
        architectures = config.get("architectures")
        hf_arch = ""
        if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
            hf_arch = architectures[0]
        model_type = str(config.get("model_type") or "")
        architecture = _GGUF_ARCH.get(hf_arch) or _GGUF_ARCH_OF_TYPE.get(model_type)
        if architecture is None:
            architecture = model_type or hf_arch.removesuffix("ForCausalLM").lower()
        if not architecture:
            raise BadInputError(
                "The model's config.json names no architecture (architectures or model_type); "
                "use a model folder saved by transformers."
            )
        # Multimodal models (Gemma 3 4B and up) keep the language model's dimensions apart.
        text = config.get("text_config")
        dims: dict[str, Any] = {**config, **text} if isinstance(text, Mapping) else dict(config)
        heads = _dimension(dims, "num_attention_heads", "n_head")
        kv_heads = _dimension(dims, "num_key_value_heads", default=heads)
        context = _dimension(dims, "max_position_embeddings", "n_positions", default=0)
        return cls(
            architecture=architecture,
            hf_architecture=hf_arch or model_type,
            hidden_size=_dimension(dims, "hidden_size", "n_embd"),
            num_layers=_dimension(dims, "num_hidden_layers", "n_layer"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            vocab_size=_dimension(
                dims, "vocab_size", default=_dimension(config, "vocab_size", default=0)
            ),
            context_length=context or None,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> BaseShape:
        """The shape of the model in `folder`, from its config.json."""
        path = folder / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(
                f"{folder} has no config.json; choose the folder of a model saved by transformers."
            ) from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise BadInputError(f"{path} cannot be read ({error}); check the file.") from None
        if not isinstance(config, dict):
            raise BadInputError(f"{path} holds no JSON object; check the file.")
        return cls.from_config(config)


def _dimension(config: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    if default is not None:
        return default
    raise BadInputError(
        f"The model's config.json has no {keys[0]}, so its shape is unknown; use a model folder "
        "saved by transformers."
    )


# ---------------------------------------------------------------------------------------------
# the Ollama library's models and the Hugging Face models they are


@dataclass(frozen=True)
class KnownBase:
    """A Hugging Face model and the Ollama tags that hold it (OLLAMA_API.md §6, unverified)."""

    hf_id: str
    tags: tuple[str, ...]  # best first
    rank: int  # 0: the tags are this very model; 1: its base (pretrained) sibling
    architecture: str  # GGUF architecture
    hidden_size: int | None = None  # None: not recorded
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    vocab_size: int | None = None


def _pair(
    instruct: str,
    base: str | None,
    tags: tuple[str, ...],
    arch: str,
    dims: tuple[int | None, int | None, int | None, int | None, int | None],
) -> tuple[KnownBase, ...]:
    hidden, layers, heads, kv, vocab = dims
    made = [KnownBase(instruct, tags, 0, arch, hidden, layers, heads, kv, vocab)]
    if base is not None:
        made.append(KnownBase(base, tags, 1, arch, hidden, layers, heads, kv, vocab))
    return tuple(made)


# dims: hidden size, layers, attention heads, key-value heads, vocabulary (from config.json)
KNOWN_BASES: tuple[KnownBase, ...] = (
    *_pair(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-135M",
        ("smollm2:135m", "smollm2:135m-instruct-fp16"),
        "llama",
        (576, 30, 9, 3, 49152),
    ),
    *_pair(
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "HuggingFaceTB/SmolLM2-360M",
        ("smollm2:360m", "smollm2:360m-instruct-fp16"),
        "llama",
        (960, 32, 15, 5, 49152),
    ),
    *_pair(
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "HuggingFaceTB/SmolLM2-1.7B",
        ("smollm2:1.7b", "smollm2:1.7b-instruct-fp16"),
        "llama",
        (2048, 24, 32, 32, 49152),
    ),
    *_pair(
        "meta-llama/Llama-3.2-1B-Instruct",
        "meta-llama/Llama-3.2-1B",
        ("llama3.2:1b", "llama3.2:1b-instruct-fp16"),
        "llama",
        (2048, 16, 32, 8, 128256),
    ),
    *_pair(
        "meta-llama/Llama-3.2-3B-Instruct",
        "meta-llama/Llama-3.2-3B",
        ("llama3.2:3b", "llama3.2:latest", "llama3.2:3b-instruct-fp16"),
        "llama",
        (3072, 28, 24, 8, 128256),
    ),
    *_pair(
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.1-8B",
        ("llama3.1:8b", "llama3.1:8b-instruct-fp16"),
        "llama",
        (4096, 32, 32, 8, 128256),
    ),
    *_pair(
        "meta-llama/Meta-Llama-3.1-8B-Instruct",  # the repository's earlier name
        "meta-llama/Meta-Llama-3.1-8B",
        ("llama3.1:8b", "llama3.1:8b-instruct-fp16"),
        "llama",
        (4096, 32, 32, 8, 128256),
    ),
    *_pair(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-0.5B",
        ("qwen2.5:0.5b", "qwen2.5:0.5b-instruct-fp16"),
        "qwen2",
        (896, 24, 14, 2, 151936),
    ),
    *_pair(
        "Qwen/Qwen2.5-1.5B-Instruct",
        "Qwen/Qwen2.5-1.5B",
        ("qwen2.5:1.5b", "qwen2.5:1.5b-instruct-fp16"),
        "qwen2",
        (1536, 28, 12, 2, 151936),
    ),
    *_pair(
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-3B",
        ("qwen2.5:3b", "qwen2.5:3b-instruct-fp16"),
        "qwen2",
        (2048, 36, 16, 2, 151936),
    ),
    *_pair(
        "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-7B",
        ("qwen2.5:7b", "qwen2.5:7b-instruct-fp16"),
        "qwen2",
        (3584, 28, 28, 4, 152064),
    ),
    *_pair(
        "google/gemma-2-2b-it",
        "google/gemma-2-2b",
        ("gemma2:2b",),
        "gemma2",
        (2304, 26, 8, 4, 256000),
    ),
    *_pair(
        "google/gemma-2-9b-it",
        "google/gemma-2-9b",
        ("gemma2:9b",),
        "gemma2",
        (3584, 42, 16, 8, 256000),
    ),
    *_pair(
        "google/gemma-2b-it", "google/gemma-2b", ("gemma:2b",), "gemma", (2048, 18, 8, 1, 256000)
    ),
    *_pair(
        "google/gemma-7b-it", "google/gemma-7b", ("gemma:7b",), "gemma", (3072, 28, 16, 16, 256000)
    ),
    *_pair(
        "google/gemma-3-1b-it",
        "google/gemma-3-1b-pt",
        ("gemma3:1b",),
        "gemma3",
        (1152, 26, 4, 1, 262144),
    ),
    *_pair(
        "google/gemma-3-4b-it",
        "google/gemma-3-4b-pt",
        ("gemma3:4b",),
        "gemma3",
        (2560, 34, 8, 4, None),
    ),
    *_pair(
        "mistralai/Mistral-7B-Instruct-v0.3",
        "mistralai/Mistral-7B-v0.3",
        ("mistral:7b",),
        "llama",
        (4096, 32, 32, 8, 32768),
    ),
    *_pair(
        "microsoft/Phi-3-mini-4k-instruct", None, ("phi3:mini",), "phi3", (3072, 32, 32, 32, 32064)
    ),
    *_pair(
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
        ("tinyllama:1.1b",),
        "llama",
        (2048, 22, 32, 4, 32000),
    ),
)

# Words in a model's name that do not tell bases apart: chat tuning, packaging, quantisation.
_NOISE = frozenset(
    {"instruct", "it", "chat", "hf", "pt", "base", "gguf", "mlx", "bnb", "4bit", "8bit", "awq"}
    | {"gptq", "int4", "int8", "fp16", "bf16", "f16", "f32", "fp32"}
)
_QUANT_SUFFIX = re.compile(r"[-_.](?:i?q\d\w*|f16|f32|bf16|fp16|fp32)$")
_EXTENSIONS = (".gguf", ".safetensors", ".bin")


def _name_key(name: str) -> tuple[str, ...]:
    """The words that identify a model in a hub id, folder path or GGUF file name."""
    last = re.split(r"[/\\]", name.strip().rstrip("/\\"))[-1].lower()
    for extension in _EXTENSIONS:
        last = last.removesuffix(extension)
    while (stripped := _QUANT_SUFFIX.sub("", last)) != last:
        last = stripped
    return tuple(w for w in re.split(r"[-_. ]+", last) if w and w not in _NOISE)


def _fits(known: KnownBase, shape: BaseShape) -> bool:
    pairs = (
        (known.hidden_size, shape.hidden_size),
        (known.num_layers, shape.num_layers),
        (known.num_heads, shape.num_heads),
        (known.num_kv_heads, shape.num_kv_heads),
        (known.vocab_size, shape.vocab_size),
    )
    recorded = known.hidden_size is not None and known.num_layers is not None
    return (
        recorded
        and known.architecture == shape.architecture
        and all(a is None or a == b for a, b in pairs)
    )


def suggest_bases(base_model: str, shape: BaseShape | None) -> list[str]:
    """Ollama tags to offer as the base of a fine-tune of `base_model`, best first.

    `base_model` is a hub id, a local folder or a GGUF file; it is matched on its last path
    component, ignoring case, chat suffixes (-Instruct, -it, -Chat) and quantisation suffixes.
    Name matches whose recorded dimensions contradict `shape` are dropped; when no name matches,
    the known bases of the same shape are offered.
    """
    key = _name_key(base_model)
    last = re.split(r"[/\\]", base_model.strip().rstrip("/\\"))[-1].lower()
    named = [k for k in KNOWN_BASES if key and _name_key(k.hf_id) == key]
    if shape is not None:
        named = [k for k in named if _fits(k, shape) or k.hidden_size is None]
    named.sort(key=lambda k: (k.hf_id.split("/")[-1].lower() != last, k.rank))
    found = named
    if not found and shape is not None:
        found = sorted((k for k in KNOWN_BASES if _fits(k, shape)), key=lambda k: k.rank)
    tags: list[str] = []
    for known in found:
        tags += [t for t in known.tags if t not in tags]
    return tags


# ---------------------------------------------------------------------------------------------
# checking an Ollama model against the fine-tune's base


@dataclass(frozen=True)
class Compatibility:
    ok: bool
    problems: tuple[str, ...]  # each one sentence
    adapter_supported: bool  # Ollama converts safetensors LoRA adapters only for llama and gemma2


def check_base(
    shape: BaseShape,
    ollama_model_info: Mapping[str, Any],
    ollama_family: str,
    *,
    name: str = "the Ollama model",
) -> Compatibility:
    """Whether the Ollama model (its /api/show `model_info` and `details.family`) has the shape
    of the fine-tune's base. Keys missing from `model_info` are not problems (Ollama's show
    leaves long arrays such as the token list out, so the vocabulary is often unknown)."""
    info = ollama_model_info
    arch = info.get("general.architecture")
    theirs = arch if isinstance(arch, str) and arch else ollama_family
    problems: list[str] = []
    if theirs and theirs != shape.architecture:
        problems.append(
            f"The fine-tune was trained on a {shape.architecture} model, but {name} is a "
            f"{theirs} model."
        )
    vocab = info.get(f"{theirs}.vocab_size")
    tokens = info.get("tokenizer.ggml.tokens")
    if not _is_count(vocab) and isinstance(tokens, list) and len(tokens) > 5:
        vocab = len(tokens)  # only with `verbose`: shorter lists are what show cuts long ones to
    checks = (
        (info.get(f"{theirs}.block_count"), shape.num_layers, "{} layers"),
        (info.get(f"{theirs}.embedding_length"), shape.hidden_size, "a hidden size of {}"),
        (info.get(f"{theirs}.attention.head_count"), shape.num_heads, "{} attention heads"),
        (info.get(f"{theirs}.attention.head_count_kv"), shape.num_kv_heads, "{} key-value heads"),
        (vocab, shape.vocab_size, "a vocabulary of {} tokens"),
    )
    for value, ours, words in checks:
        if _is_count(value) and value != ours:
            problems.append(
                f"The fine-tune was trained on a {shape.architecture} model with "
                f"{words.format(ours)}, but {name} has {value}."
            )
    return Compatibility(
        ok=not problems,
        problems=tuple(problems),
        adapter_supported=theirs in ADAPTER_ARCHITECTURES,
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# the adapter_config.json to upload


def adapter_config_for_ollama(config: Mapping[str, Any]) -> dict[str, Any]:
    """peft's adapter_config.json content, made fit for Ollama's adapter converter.

    Ollama reads `lora_alpha` as an unsigned integer (16.0 fails), applies one alpha to every
    tensor at alpha/rank, and maps only the attention and MLP projections. An rsLoRA adapter
    (alpha/sqrt(rank)) is rewritten to the equivalent plain alpha when that is a whole number.
    Anything else it cannot represent is refused, in one sentence that says what to do.
    """
    merged = "publish the merged model instead"
    if config.get("use_dora"):
        raise BadInputError(f"The adapter uses DoRA, which Ollama cannot import; {merged}.")
    saved = config.get("modules_to_save")
    if saved:
        names = ", ".join(map(str, saved)) if isinstance(saved, list) else str(saved)
        raise BadInputError(
            f"The adapter also trains whole modules ({names}), which Ollama cannot import; "
            f"{merged}."
        )
    targets = config.get("target_modules")
    if isinstance(targets, str):
        if targets not in ADAPTER_MODULES:
            raise BadInputError(
                f"The adapter names its target modules by a pattern ({targets}), so Ollama may "
                f"not be able to import it; {merged}, or retrain with the modules listed by name."
            )
        targets = [targets]
    if isinstance(targets, list):
        other = sorted(
            {str(t) for t in targets if str(t).rsplit(".", 1)[-1] not in ADAPTER_MODULES}
        )
        if other:
            raise BadInputError(
                f"The adapter also trains {', '.join(other)}, which Ollama cannot import; "
                f"{merged}, or retrain with only the attention and MLP projections as targets."
            )
    if config.get("alpha_pattern"):
        raise BadInputError(
            f"The adapter uses a different alpha for some modules, which Ollama cannot import; "
            f"{merged}."
        )
    alpha = _whole_alpha(config.get("lora_alpha"))
    result = dict(config)
    if config.get("use_rslora"):
        rank = config.get("r")
        if config.get("rank_pattern") or not isinstance(rank, int) or rank <= 0:
            raise BadInputError(
                f"The adapter uses rsLoRA with ranks Ollama cannot scale for; {merged}."
            )
        scaled = alpha * math.sqrt(rank)
        if abs(scaled - round(scaled)) > 1e-9:
            raise BadInputError(
                f"The adapter uses rsLoRA at rank {rank}, whose scale Ollama cannot express "
                f"with a whole-number alpha; {merged}, or retrain with a square rank such as 16."
            )
        alpha, result["use_rslora"] = round(scaled), False
    result["lora_alpha"] = alpha
    return result


def _whole_alpha(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInputError(
            "The adapter's adapter_config.json has no numeric lora_alpha; retrain the adapter "
            "or publish the merged model instead."
        )
    if not math.isfinite(value) or value != int(value) or value <= 0 or value >= 2**32:
        raise BadInputError(
            f"The adapter's lora_alpha is {value}, but Ollama needs a positive whole number; "
            "retrain it with an integer alpha or publish the merged model instead."
        )
    return int(value)
