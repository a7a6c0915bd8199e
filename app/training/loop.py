"""One optimiser step, one evaluation, and the optimiser and schedule they use.

The loss of a step is the weighted cross-entropy summed over every learned token of all its
micro-batches, divided by the number of those tokens: gradient accumulation then gives exactly
the gradient of the whole batch, whatever the micro-batches' lengths.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch.nn import functional
from transformers import PreTrainedModel

from app.jobs.spec import TrainingHyperparameters
from app.training.batching import Batch, BatchPlan
from app.training.device import Placement

# Architectures whose logits are exactly lm_head(last hidden state): no soft-capping or scaling.
_PLAIN_HEADS = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "starcoder2", "gemma"}
)


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    learning_rate: float
    tokens: int  # real (non-padding) tokens
    trained_tokens: int  # tokens the loss was computed on


def make_optimizer(model: torch.nn.Module, hyper: TrainingHyperparameters) -> torch.optim.AdamW:
    """AdamW over the trainable weights; no decay on biases and norms (1-D weights)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": hyper.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    device = trainable[0].device.type
    # The fused kernel is what transformers' Trainer uses too; MPS support for it is recent.
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=hyper.learning_rate, fused=device in ("cpu", "cuda")
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, hyper: TrainingHyperparameters, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine or linear decay to 0 (or constant), as transformers defines
    them; a function of the step alone, so a checkpoint needs only the scheduler's step."""
    warmup = math.ceil(hyper.warmup_ratio * total_steps)
    decay = hyper.scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if decay == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if decay == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StepRunner:
    """Runs optimiser steps and evaluations of one model on one device."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        placement: Placement,
        hyper: TrainingHyperparameters,
    ) -> None:
        self._model = model
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._placement = placement
        self._max_grad_norm = hyper.max_grad_norm or math.inf  # inf: measure, do not clip
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self._split = split_head(model)

    def train_step(self, plan: BatchPlan, step: int) -> StepResult:
        batches = plan.step(step)
        learned = sum(batch.trained_tokens for batch in batches)
        total = torch.zeros((), device=self._placement.device)
        for batch in batches:
            loss = self._loss_sum(batch.to(self._placement.device)) / max(learned, 1)
            loss.backward()  # type: ignore[no-untyped-call]
            total += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self._trainable, self._max_grad_norm)
        learning_rate = float(self._optimizer.param_groups[0]["lr"])
        self._optimizer.step()
        self._scheduler.step()
        self._optimizer.zero_grad(set_to_none=True)
        real = sum(batch.real_tokens for batch in batches)
        return StepResult(float(total), float(norm), learning_rate, real, learned)

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> float | None:
        """Mean weighted loss over the learned tokens of `batches`; None when there are none."""
        self._model.eval()
        try:
            total = sum(float(self._loss_sum(b.to(self._placement.device))) for b in batches)
        finally:
            self._model.train()
        learned = sum(batch.trained_tokens for batch in batches)
        return total / learned if learned else None

    def _loss_sum(self, batch: Batch) -> torch.Tensor:
        weights = batch.weights[:, 1:]
        learned = weights > 0
        with self._autocast():
            picked = self._learned_logits(batch, learned).float()
        losses = functional.cross_entropy(picked, batch.input_ids[:, 1:][learned], reduction="none")
        return (losses * weights[learned]).sum()

    def _learned_logits(self, batch: Batch, learned: torch.Tensor) -> torch.Tensor:
        """The logits that predict each learned token, one row per token."""
        inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
        if self._split is None:
            logits: torch.Tensor = self._model(**inputs, use_cache=False).logits
            return logits[:, :-1][learned]
        # The output layer is a fifth of a small model's work: run it on learned positions only.
        decoder, head = self._split
        hidden: torch.Tensor = decoder(**inputs, use_cache=False).last_hidden_state
        picked: torch.Tensor = head(hidden[:, :-1][learned])
        return picked

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        dtype = self._placement.compute_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._placement.device.type, dtype=dtype)


def split_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, output layer) where logits are just the output layer of the decoder's output."""
    unwrap = getattr(model, "get_base_model", None)  # a peft model, without importing peft
    causal = unwrap() if callable(unwrap) else model
    if not isinstance(causal, PreTrainedModel):
        return None
    if getattr(causal.config, "model_type", None) not in _PLAIN_HEADS:
        return None
    decoder = causal.get_decoder()  # type: ignore[no-untyped-call]
    head = causal.get_output_embeddings()  # type: ignore[no-untyped-call]
    if not isinstance(decoder, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    return decoder, head
