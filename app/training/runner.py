"""One training job from spec to outputs, reported through the event channel.

The run: pick the device, find (or convert) the base, tokenise the dataset, load the model for
the method, resume from the newest checkpoint if there is one, then step until done or asked to
stop. A stop (SIGTERM, or the supervising process gone) finishes the current step, writes a
checkpoint and ends with `finished` cancelled or interrupted. Failures end with `error`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from app.errors import KnownError
from app.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    FinishedEvent,
    FinishedStatus,
    ProgressEvent,
    StartedEvent,
    Summary,
)
from app.jobs.spec import SPEC_FILE, TrainingSpec, load_spec
from app.training.base_model import load_tokenizer, model_cache_root, resolve_base
from app.training.batching import Batch, BatchPlan, eval_batches
from app.training.channel import PROGRESS_INTERVAL_S, EventChannel, ProgressThrottle, StopRequest
from app.training.checkpoints import RunState, Trainables, checkpoints, restore, save_checkpoint
from app.training.data import Examples, ensure_chat_template, read_records, split_records, tokenize
from app.training.device import Placement, choose_placement, peak_memory_mb, set_torch_threads
from app.training.errors import TrainingError, error_event, exit_status
from app.training.loop import StepResult, StepRunner, make_optimizer, make_scheduler
from app.training.methods import load_and_prepare, parameter_counts
from app.training.outputs import save_outputs, write_summary

log = logging.getLogger(__name__)

_RECENT_LOSSES = 20  # steps the summary's train loss is the mean of


def run_job(
    job_dir: Path,
    channel: EventChannel,
    stop: StopRequest,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> int:
    """Train the job whose spec is in `job_dir`; return the process exit status."""
    try:
        spec = load_spec(job_dir / SPEC_FILE)
    except KnownError as error:
        return _fail(channel, error_event(error))
    return run_training(spec, job_dir, channel, stop, progress_interval_s)


def run_training(
    spec: TrainingSpec,
    job_dir: Path,
    channel: EventChannel,
    stop: StopRequest,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> int:
    """Train `spec` in `job_dir`; every outcome is reported as an event. Returns the status."""
    session = _Session(spec, job_dir, channel, stop, progress_interval_s)
    try:
        session.run()
    except Exception as error:
        return _fail(channel, error_event(error, session.device_name))
    return 0


def _fail(channel: EventChannel, event: ErrorEvent) -> int:
    channel.emit(event)
    return exit_status(event)


@dataclass
class _Run:
    """Everything the steps need, once loaded."""

    plan: BatchPlan
    evaluation: list[Batch]
    steps: StepRunner
    parts: Trainables
    state: RunState
    total_steps: int
    train: Examples
    validation: Examples
    placement: Placement


class _Session:
    def __init__(
        self,
        spec: TrainingSpec,
        job_dir: Path,
        channel: EventChannel,
        stop: StopRequest,
        progress_interval_s: float,
    ) -> None:
        self._spec = spec
        self._job_dir = job_dir
        self._channel = channel
        self._stop = stop
        self._interval = progress_interval_s
        self._began = time.monotonic()
        self._previous_seconds = 0.0  # wall time of the processes before a resume
        self.device_name = "device"

    def run(self) -> None:
        placement = self._place()
        source = resolve_base(self._spec.base_model, model_cache_root(self._spec.model_cache))
        tokenizer = load_tokenizer(source)
        ensure_chat_template(tokenizer)
        train, validation = self._examples(tokenizer)
        prepared = load_and_prepare(self._spec, source, placement)
        run = self._assemble(prepared.model, placement, train, validation, _pad_id(tokenizer))
        self._announce(run, placement, prepared.gradient_checkpointing)
        status = self._train(run)
        self._finish(run, status, tokenizer, source)

    def _place(self) -> Placement:
        _seed_everything(self._spec.hyperparameters.seed)
        set_torch_threads(self._spec.threads)
        placement = choose_placement(self._spec.device, self._spec.method)
        self.device_name = placement.kind
        return placement

    def _examples(self, tokenizer: PreTrainedTokenizerBase) -> tuple[Examples, Examples]:
        hyper = self._spec.hyperparameters
        records = read_records(self._spec.dataset.records)
        train, validation = split_records(
            records, self._spec.dataset, hyper.eval_fraction, hyper.seed
        )
        train_examples = tokenize(train, tokenizer, hyper.max_seq_length)
        if not len(train_examples):
            raise TrainingError(
                "dataset_unreadable",
                f"none of the {len(train)} training records has a token to learn from (an "
                "assistant reply, or a text): check the dataset's format and max_seq_length.",
            )
        return train_examples, tokenize(validation, tokenizer, hyper.max_seq_length)

    def _assemble(
        self,
        model: torch.nn.Module,
        placement: Placement,
        train: Examples,
        validation: Examples,
        pad_id: int,
    ) -> _Run:
        hyper = self._spec.hyperparameters
        plan = BatchPlan(train, hyper, pad_id)
        total = plan.steps_per_epoch * hyper.epochs
        total = min(total, hyper.max_steps) if hyper.max_steps else total
        optimizer = make_optimizer(model, hyper)
        scheduler = make_scheduler(optimizer, hyper, total)
        parts = Trainables(model, optimizer, scheduler)
        steps = StepRunner(model, optimizer, scheduler, placement, hyper)
        micro = -(-hyper.batch_size // hyper.gradient_accumulation_steps)
        evaluation = eval_batches(validation, micro, pad_id)
        state = self._resumed(parts)
        return _Run(plan, evaluation, steps, parts, state, total, train, validation, placement)

    def _resumed(self, parts: Trainables) -> RunState:
        found = checkpoints(self._job_dir) if self._spec.resume else []
        if not found:
            return RunState()
        state = restore(found[-1], parts, self._spec)
        self._previous_seconds = state.elapsed_seconds
        log.info("resuming from %s at step %d", found[-1].name, state.step)
        return state

    def _announce(self, run: _Run, placement: Placement, checkpointing: bool) -> None:
        trainable, total = parameter_counts(run.parts.model)
        self._channel.emit(
            StartedEvent(
                total_steps=run.total_steps,
                resume_step=run.state.step,
                device=placement.describe(),
                method=self._spec.method,
                dtype=str(placement.compute_dtype or placement.weights_dtype).removeprefix(
                    "torch."
                ),
                train_examples=len(run.train),
                eval_examples=len(run.validation),
                truncated_examples=run.train.truncated + run.validation.truncated,
                skipped_examples=run.train.skipped + run.validation.skipped,
                trainable_parameters=trainable,
                total_parameters=total,
                gradient_checkpointing=checkpointing,
            )
        )

    def _train(self, run: _Run) -> FinishedStatus:
        reporter = _Reporter(self._channel, run, self._interval)
        run.parts.model.train()
        saved = run.state.step
        while run.state.step < run.total_steps and not self._stop.requested:
            began = time.monotonic()
            result = run.steps.train_step(run.plan, run.state.step)
            _advance(run.state, result, time.monotonic() - began)
            reporter.step(result, time.monotonic() - began)
            saved = self._after_step(run, saved)
        if run.state.step >= run.total_steps:
            return "completed"
        if run.state.step > saved:
            self._checkpoint(run)
        return self._stop.reason or "cancelled"

    def _after_step(self, run: _Run, saved: int) -> int:
        """Evaluate and checkpoint when due; return the step of the newest checkpoint."""
        hyper = self._spec.hyperparameters
        step = run.state.step
        if step >= run.total_steps:
            return saved
        if step % hyper.eval_steps == 0:
            self._evaluate(run)
        if step % hyper.save_steps == 0:
            self._checkpoint(run)
            return step
        return saved

    def _evaluate(self, run: _Run) -> None:
        loss = run.steps.evaluate(run.evaluation)
        if loss is not None:
            run.state.eval_loss = loss
            self._channel.emit(EvalEvent(step=run.state.step, eval_loss=loss))

    def _checkpoint(self, run: _Run) -> None:
        run.state.elapsed_seconds = self._elapsed()
        path = save_checkpoint(self._job_dir, run.state, run.parts, self._spec)
        self._channel.emit(CheckpointEvent(step=run.state.step, path=path))

    def _finish(
        self, run: _Run, status: FinishedStatus, tokenizer: PreTrainedTokenizerBase, source: str
    ) -> None:
        artifacts: dict[str, str] = {}
        if status == "completed":
            self._evaluate(run)
            artifacts = save_outputs(run.parts.model, tokenizer, self._spec, self._job_dir, source)
        summary = self._summary(run)
        write_summary(self._job_dir, summary)
        self._channel.emit(FinishedEvent(status=status, artifacts=artifacts, summary=summary))

    def _summary(self, run: _Run) -> Summary:
        state = run.state
        recent = state.recent_losses
        return Summary(
            steps=state.step,
            total_steps=run.total_steps,
            epochs=state.step / run.plan.steps_per_epoch,
            tokens=state.tokens,
            trained_tokens=state.trained_tokens,
            train_loss=sum(recent) / len(recent) if recent else None,
            eval_loss=state.eval_loss,
            duration_seconds=self._elapsed(),
            tokens_per_second=state.tokens / state.train_seconds if state.train_seconds else 0.0,
            peak_memory_mb=peak_memory_mb(run.placement.device),
            train_examples=len(run.train),
            eval_examples=len(run.validation),
            truncated_examples=run.train.truncated + run.validation.truncated,
            skipped_examples=run.train.skipped + run.validation.skipped,
        )

    def _elapsed(self) -> float:
        """Wall time of the whole job: earlier processes' (from the checkpoint) and this one's."""
        return self._previous_seconds + time.monotonic() - self._began


class _Reporter:
    """Emits progress a few times a second at most, and always for the last step."""

    def __init__(self, channel: EventChannel, run: _Run, interval_s: float) -> None:
        self._channel = channel
        self._run = run
        self._throttle = ProgressThrottle(interval_s)
        self._losses: list[float] = []
        self._tokens = 0
        self._seconds = 0.0
        self._steps = 0
        self._began = time.monotonic()

    def step(self, result: StepResult, seconds: float) -> None:
        self._losses.append(result.loss)
        self._tokens += result.tokens
        self._seconds += seconds
        self._steps += 1
        step = self._run.state.step
        if self._throttle.due(final=step >= self._run.total_steps):
            self._emit(result)

    def _emit(self, result: StepResult) -> None:
        run = self._run
        wall = time.monotonic() - self._began  # evaluations and checkpoints included
        remaining = run.total_steps - run.state.step
        self._channel.emit(
            ProgressEvent(
                step=run.state.step,
                total_steps=run.total_steps,
                epoch=run.state.step / run.plan.steps_per_epoch,
                loss=sum(self._losses) / len(self._losses),
                learning_rate=result.learning_rate,
                grad_norm=result.grad_norm,
                tokens_per_second=self._tokens / max(self._seconds, 1e-9),
                eta_seconds=remaining * wall / self._steps,
            )
        )
        self._losses.clear()


def _advance(state: RunState, result: StepResult, seconds: float) -> None:
    state.step += 1
    state.tokens += result.tokens
    state.trained_tokens += result.trained_tokens
    state.train_seconds += seconds
    state.recent_losses = [*state.recent_losses, result.loss][-_RECENT_LOSSES:]


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Padding is never attended to nor learned from, so any id will do; the tokenizer's own first.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # libraries may draw from numpy's global generator
    torch.manual_seed(seed)
