"""One optimiser step, one evaluation, and the optimiser and schedule they use.

The loss of a step is the weighted cross-entropy summed over every learned token of all its
micro-batches, divided by the number of those tokens: gradient accumulation then gives exactly
the gradient of the whole batch, whatever the micro-batches' lengths.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional
from transformers import get_scheduler

from app.jobs.spec import TrainingHyperparameters
from app.training.batching import Batch, BatchPlan
from app.training.device import Placement

_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


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
    scheduler: torch.optim.lr_scheduler.LambdaLR = get_scheduler(
        _SCHEDULERS[hyper.scheduler],
        optimizer,
        num_warmup_steps=math.ceil(hyper.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return scheduler


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
        with self._autocast():
            logits = self._model(
                input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
            ).logits
        weights = batch.weights[:, 1:]
        learned = weights > 0
        # Only learned positions reach the softmax: prompts and padding cost no loss compute.
        picked = logits[:, :-1][learned].float()
        losses = functional.cross_entropy(picked, batch.input_ids[:, 1:][learned], reduction="none")
        return (losses * weights[learned]).sum()

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        dtype = self._placement.compute_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._placement.device.type, dtype=dtype)


@contextlib.contextmanager
def training_mode(model: torch.nn.Module) -> Iterator[None]:
    model.train()
    try:
        yield
    finally:
        model.eval()
