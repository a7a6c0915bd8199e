"""The three ways to train a base model: LoRA, QLoRA (LoRA on 4-bit weights) and full.

Also decides gradient checkpointing: on when asked, and on by itself when a memory estimate says
the run would not fit without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from app.jobs.spec import TrainingHyperparameters, TrainingSpec
from app.training.base_model import load_model
from app.training.device import Placement, available_memory
from app.training.errors import TrainingError

log = logging.getLogger(__name__)

_ADAM_BYTES = 8  # two fp32 moments per trainable weight
_GRAD_BYTES = 4
_MEMORY_HEADROOM = 0.85  # leave room for the allocator's fragmentation and the data


@dataclass(frozen=True)
class Prepared:
    """The model to train, and what was decided on the way."""

    model: torch.nn.Module
    gradient_checkpointing: bool


def load_and_prepare(spec: TrainingSpec, source: str, placement: Placement) -> Prepared:
    """Load the base at `source` for `spec`'s method on `placement`'s device."""
    model = _load_base(spec, source, placement)
    checkpointing = _wants_checkpointing(spec.hyperparameters, model, placement)
    if checkpointing:
        _enable_checkpointing(model)
    trained = _apply_method(spec, model)
    return Prepared(trained, checkpointing)


def _load_base(spec: TrainingSpec, source: str, placement: Placement) -> PreTrainedModel:
    # Loaded straight onto the device: no detour through host memory for a GPU run.
    on_device = {"": placement.device}
    if spec.method != "qlora":
        return load_model(source, placement.weights_dtype, device_map=on_device)
    quantization = _four_bit_config(placement)
    dtype = placement.compute_dtype or torch.float16
    return load_model(source, dtype, quantization_config=quantization, device_map=on_device)


def _four_bit_config(placement: Placement) -> Any:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError(
            "missing_dependency",
            "QLoRA needs the bitsandbytes package, which is not installed: run "
            "`pip install bitsandbytes` in the app's environment, or choose LoRA.",
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=placement.compute_dtype or torch.float16,
    )


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # Non-reentrant checkpointing needs no input gradients, so frozen embeddings stay frozen.
    options = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers 5 renamed it, and warns when the old name is used
        enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)  # type: ignore[no-untyped-call]


def _apply_method(spec: TrainingSpec, model: PreTrainedModel) -> torch.nn.Module:
    if spec.method == "full":
        model.requires_grad_(True)
        return model
    if spec.method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Checkpointing, when wanted, is already on: peft would switch it on the reentrant way.
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=False
        )
    return _with_lora(spec.hyperparameters, model)


def _with_lora(hyper: TrainingHyperparameters, model: PreTrainedModel) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = hyper.lora_target_modules or default_lora_targets(model)
    missing = set(targets) - _linear_leaf_names(model)
    if missing:
        raise TrainingError(
            "bad_spec",
            f"hyperparameters.lora_target_modules names {sorted(missing)}, which this model "
            f"does not have: choose from {sorted(_linear_leaf_names(model))}.",
        )
    config = LoraConfig(
        r=hyper.lora_r,
        lora_alpha=int(hyper.lora_alpha),  # Ollama reads it as an integer
        lora_dropout=hyper.lora_dropout,
        target_modules=sorted(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with peft_quietly():
        return get_peft_model(model, config)


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Wrap peft's model wrapping: it asks transformers 5 a deprecated question on the way,
    which warns, and nothing a user could do about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def default_lora_targets(model: PreTrainedModel) -> list[str]:
    """The attention and MLP projections: every linear layer inside the transformer blocks."""
    return sorted(_linear_leaf_names(model))


def _linear_leaf_names(model: PreTrainedModel) -> set[str]:
    output = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D) and module is not output and name
    }


def _wants_checkpointing(
    hyper: TrainingHyperparameters, model: PreTrainedModel, placement: Placement
) -> bool:
    if hyper.gradient_checkpointing != "auto":
        return hyper.gradient_checkpointing == "on"
    needed = estimated_training_bytes(model, hyper, placement, checkpointing=False)
    free = available_memory(placement.device)
    if needed is None or free is None or needed <= free * _MEMORY_HEADROOM:
        return False
    log.info(
        "gradient checkpointing is on: the run needs about %.1f GB and %.1f GB are free",
        needed / 1e9,
        free / 1e9,
    )
    return True


def estimated_training_bytes(
    model: PreTrainedModel,
    hyper: TrainingHyperparameters,
    placement: Placement,
    checkpointing: bool,
) -> int | None:
    """A rough upper bound of the memory training adds to the loaded weights, in bytes.

    Counts gradients and AdamW moments of the trainable weights, the activations a transformer
    block keeps for the backward pass (only each block's input with checkpointing), and the
    logits of the longest micro-batch. None when the model's shape is not known.
    """
    shape = _shape(model)
    if shape is None:
        return None
    hidden, intermediate, layers, vocab = shape
    trainable = model.num_parameters() if hyper.method == "full" else _lora_parameters(hyper, shape)
    element = torch.finfo(placement.compute_dtype or placement.weights_dtype).bits // 8
    per_block = (6 * hidden + 4 * intermediate) * element
    kept = layers * hidden * element + per_block if checkpointing else layers * per_block
    tokens = _micro_batch(hyper) * hyper.max_seq_length
    logits = vocab * 4 * 3  # fp32 logits, their log-softmax, their gradient
    return trainable * (_GRAD_BYTES + _ADAM_BYTES) + tokens * (kept + logits)


def _shape(model: PreTrainedModel) -> tuple[int, int, int, int] | None:
    config = model.config
    hidden = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    vocab = getattr(config, "vocab_size", None)
    if not (isinstance(hidden, int) and isinstance(layers, int) and isinstance(vocab, int)):
        return None
    intermediate = getattr(config, "intermediate_size", None)
    return hidden, intermediate if isinstance(intermediate, int) else 4 * hidden, layers, vocab


def _lora_parameters(hyper: TrainingHyperparameters, shape: tuple[int, int, int, int]) -> int:
    hidden, intermediate, layers, _vocab = shape
    # A and B of each of the seven projections, at most hidden + intermediate wide.
    return layers * 7 * hyper.lora_r * (hidden + intermediate)


def _micro_batch(hyper: TrainingHyperparameters) -> int:
    return -(-hyper.batch_size // hyper.gradient_accumulation_steps)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
