"""On a CUDA machine: SmolLM2-135M LoRA in bf16 and QLoRA (4-bit), tokens per second and peak
GPU memory, through the runner. Not part of `make bench` (most machines have no GPU): run
`python -m bench.train_gpu` where one is at hand and copy its rows into bench/RESULTS.md.

QLoRA needs bitsandbytes (`pip install bitsandbytes`); without it that row says so.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.train_support import alpaca_records, make_job, run_runner

STEPS = 30
BATCH = 8
LENGTH = 512

Row = tuple[str, str, str, str]


def rows(folder: Path) -> list[Row]:
    records = alpaca_records(folder / "alpaca.jsonl", limit=STEPS * BATCH)
    cache = folder / "models"
    table = [_row("LoRA, bf16", _run(folder / "lora", records, cache, "lora"))]
    if importlib.util.find_spec("bitsandbytes") is None:
        table.append(("QLoRA, 4-bit NF4", "not run", "bitsandbytes is not installed", "skipped"))
    else:
        table.append(_row("QLoRA, 4-bit NF4", _run(folder / "qlora", records, cache, "qlora")))
    return table


def _run(folder: Path, records: Path, cache: Path, method: str) -> dict[str, Any]:
    job = make_job(
        folder,
        records,
        cache,
        device="cuda",
        method=method,
        max_steps=STEPS,
        batch_size=BATCH,
        max_seq_length=LENGTH,
    )
    summary: dict[str, Any] = run_runner(job).last("finished")["summary"]
    return summary


def _row(label: str, summary: dict[str, Any]) -> Row:
    return (
        f"{label} on CUDA, SmolLM2-135M, {STEPS} steps of {BATCH} Alpaca examples up to {LENGTH}",
        f"{summary['tokens_per_second']:.0f} tokens/s, peak GPU memory "
        f"{summary['peak_memory_mb']:.0f} MB",
        machine(),
        "reported",
    )


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: this benchmark needs one", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mtm-bench-gpu-") as folder:
        table = rows(Path(folder))
    print(f"on {torch.cuda.get_device_name()}")
    for what, figure, baseline, verdict in table:
        print(f"{verdict:>8}  {what}: {figure}  [{baseline}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
