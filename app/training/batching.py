"""Which examples train together, in what order, and as which tensors.

A row is one sequence of a batch: one example, or with packing several short ones laid end to
end. Each epoch's order follows from the seed and the epoch number alone, so the sampler's
position is simply the step number: a resumed run rebuilds the same order and skips ahead.

Length grouping sorts rows by length within shuffled mega-batches, so a batch pads to a length
close to each of its rows (the longest batch goes first, so a run that will not fit fails early).
Rows are right-padded and no attention mask is passed: under causal attention a real token never
sees the padding after it, and torch keeps its fast causal kernels. Packed rows carry position
ids that restart at every example, from which transformers builds a block-diagonal mask, so
packed examples do not attend to one another.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from app.jobs.spec import TrainingHyperparameters
from app.training.data import Examples

_MEGA_BATCHES = 50  # batches sorted together; more groups lengths better and shuffles less


@dataclass(frozen=True)
class Batch:
    """Tensors for one forward pass; `weights` is 0 where a token is not learned from."""

    input_ids: torch.Tensor
    weights: torch.Tensor
    position_ids: torch.Tensor | None
    real_tokens: int

    def to(self, device: torch.device) -> Batch:
        positions = self.position_ids
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
            positions.to(device, non_blocking=True) if positions is not None else None,
            self.real_tokens,
        )

    @property
    def trained_tokens(self) -> int:
        return int((self.weights[:, 1:] > 0).sum())


class BatchPlan:
    """The rows of a split and the order of their batches in every epoch."""

    def __init__(self, examples: Examples, hyper: TrainingHyperparameters, pad_id: int) -> None:
        self._examples = examples
        self._hyper = hyper
        self._pad_id = pad_id
        self.rows: list[list[int]] = (
            pack(examples.lengths, hyper.max_seq_length)
            if hyper.packing
            else [[index] for index in range(len(examples))]
        )
        self._row_lengths = np.asarray(
            [int(examples.lengths[row].sum()) for row in self.rows], np.int64
        )
        self._order: tuple[int, list[list[int]]] | None = None  # the current epoch's, cached

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.rows) // self._hyper.batch_size)

    def step(self, step: int) -> list[Batch]:
        """The micro-batches of optimiser step `step` (counted from 0 over all epochs)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.epoch_order(epoch))
        rows = self._order[1][position]
        return [
            self.collate(part) for part in _split(rows, self._hyper.gradient_accumulation_steps)
        ]

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """The rows of each batch of `epoch`, in order."""
        rng = np.random.default_rng([self._hyper.seed, epoch])
        order = rng.permutation(len(self.rows))
        size = self._hyper.batch_size
        if not self._hyper.group_by_length:
            return [order[i : i + size].tolist() for i in range(0, len(order), size)]
        return _grouped(order, self._row_lengths, size, rng)

    def collate(self, rows: list[int]) -> Batch:
        """Right-padded tensors of `rows` (to the longest, or to max_seq_length)."""
        hyper = self._hyper
        width = hyper.max_seq_length if hyper.padding == "max_length" else 0
        members = [self.rows[row] for row in rows]
        return collate(self._examples, members, self._pad_id, width, hyper.packing)


def collate(
    examples: Examples, rows: list[list[int]], pad_id: int, min_width: int = 0, packed: bool = False
) -> Batch:
    """A batch of `rows`, each the examples laid end to end in it, right-padded with `pad_id`."""
    pieces = [_row(examples, members) for members in rows]
    width = max(min_width, *(len(ids) for ids, _w, _p in pieces))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    positions = torch.arange(width).repeat(len(rows), 1) if packed else None
    for index, (row_ids, row_weights, row_positions) in enumerate(pieces):
        ids[index, : len(row_ids)] = torch.from_numpy(row_ids)
        weights[index, : len(row_ids)] = torch.from_numpy(row_weights)
        if positions is not None:
            positions[index, : len(row_ids)] = torch.from_numpy(row_positions)
    real = sum(len(row_ids) for row_ids, _w, _p in pieces)
    return Batch(ids, weights, positions, real)


def _row(
    examples: Examples, members: list[int]
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    parts = [examples.example(index) for index in members]
    ids = np.concatenate([part_ids for part_ids, _ in parts])
    weights = np.concatenate([part_weights for _, part_weights in parts])
    positions = np.concatenate([np.arange(len(part_ids)) for part_ids, _ in parts])
    return ids, weights, positions


def _grouped(
    order: NDArray[np.int64], lengths: NDArray[np.int64], size: int, rng: np.random.Generator
) -> list[list[int]]:
    mega = size * _MEGA_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + size].tolist() for i in range(0, len(chunk), size)]
    shuffled = [batches[i] for i in rng.permutation(len(batches))]
    longest = max(range(len(shuffled)), key=lambda i: int(lengths[shuffled[i]].max()))
    shuffled.insert(0, shuffled.pop(longest))
    return shuffled


def _split(rows: list[int], parts: int) -> list[list[int]]:
    size = -(-len(rows) // parts)
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def pack(lengths: NDArray[np.int64], capacity: int) -> list[list[int]]:
    """Examples into rows of at most `capacity` tokens: best fit, longest first.

    Deterministic, so every epoch (and a resumed run) has the same rows; epochs shuffle rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted: the best fit is a bisect away
    rows: list[list[int]] = []
    for index in order:
        need = int(lengths[index])
        at = bisect.bisect_left(free, (need, -1))
        if at == len(free):
            rows.append([index])
            bisect.insort(free, (capacity - need, len(rows) - 1))
            continue
        room, row = free.pop(at)
        rows[row].append(index)
        bisect.insort(free, (room - need, row))
    return rows


def eval_batches(examples: Examples, micro_batch: int, pad_id: int) -> list[Batch]:
    """The validation split in batches of similar lengths (no packing: exact per-example loss)."""
    order = np.argsort(-examples.lengths, kind="stable").tolist()
    rows = [[index] for index in order]
    return [
        collate(examples, rows[i : i + micro_batch], pad_id)
        for i in range(0, len(rows), micro_batch)
    ]
