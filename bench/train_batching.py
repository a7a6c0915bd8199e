"""Batching: length-grouped batches and packing against padding every example to the maximum.

One epoch of the same Alpaca examples (../shared/data/real/alpaca_en_demo.json) through the
runner, SmolLM2-135M LoRA on CPU, three ways; each trains on the same real tokens, so tokens per
second compare the work saved. Length grouping must reach at least 1.5x the padded speed.

`python -m bench.train_batching` prints the rows; `rows(folder)` gives them to `make bench`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from app.settings import Hyperparameters
from bench.train_support import alpaca_records, make_job, run_runner

EXAMPLES = 48
BATCH = 8
LENGTH = Hyperparameters().max_seq_length  # the app's default: what "pad to the maximum" costs
REQUIRED = 1.5

Row = tuple[str, str, str, str]
WAYS: dict[str, dict[str, Any]] = {
    "padded": {"padding": "max_length", "group_by_length": False},
    "grouped": {},
    "packed": {"packing": True},
}


def rows(folder: Path) -> list[Row]:
    records = alpaca_records(folder / "alpaca.jsonl", limit=EXAMPLES)
    cache = folder / "models"
    summaries = {way: _summary(folder, way, records, cache) for way in WAYS}
    padded = summaries["padded"]
    return [_row(way, summaries[way], padded) for way in ("grouped", "packed")]


def _summary(folder: Path, way: str, records: Path, cache: Path) -> dict[str, Any]:
    job = make_job(
        folder / way, records, cache, epochs=1, batch_size=BATCH, max_seq_length=LENGTH, **WAYS[way]
    )
    summary: dict[str, Any] = run_runner(job).last("finished")["summary"]
    return summary


def _row(way: str, ours: dict[str, Any], padded: dict[str, Any]) -> Row:
    speed = ours["tokens_per_second"] / padded["tokens_per_second"]
    same = ours["tokens"] == padded["tokens"]
    label = {"grouped": "Length-grouped batches", "packed": "Packed sequences"}[way]
    return (
        f"{label}, {EXAMPLES} Alpaca examples up to {LENGTH} tokens, batch {BATCH}, "
        "SmolLM2-135M LoRA on CPU",
        f"{ours['tokens_per_second']:.0f} tokens/s ({speed:.2f}x), {ours['tokens']} tokens",
        f"padding every example to {LENGTH}: {padded['tokens_per_second']:.0f} tokens/s, "
        f"{padded['tokens']} tokens; budget {REQUIRED}x",
        "pass" if speed >= REQUIRED and same else "FAIL",
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mtm-bench-batching-") as folder:
        table = rows(Path(folder))
    for what, figure, baseline, verdict in table:
        print(f"{verdict:>8}  {what}: {figure}  [{baseline}]")
    return 0 if all(row[3] != "FAIL" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
