"""The runner against a minimal transformers Trainer script, on SmolLM2-135M (GGUF), LoRA.

Three figures, each with its baseline:
- overhead: the same 20 steps of 4 examples of exactly 128 tokens (no padding on either side):
  tokens per second at least 0.95x the script's, peak memory at most 1.1x;
- end to end: the whole process (start, model load, 20 steps, save) on Alpaca at its natural
  lengths, against the script, which dequantizes the GGUF every time: LLaMA-Factory took 0.87x
  the script's time, so the runner must take less than that;
- start-up: seconds from spawning the runner to its first progress event, with the converted
  base cached, and on the very first use of the GGUF file (conversion included).

`python -m bench.train_overhead` prints the rows; `rows(folder)` gives them to `make bench`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median
from bench.train_support import (
    Timed,
    alpaca_records,
    make_job,
    run_runner,
    run_trainer_script,
    script_report,
)

STEPS = 20
BATCH = 4
FULL_LENGTH = 128  # every example is longer, so every batch is 4 x 128 real tokens
NATURAL_LENGTH = 256
LLAMA_FACTORY_RATIO = 0.87
RUNS = 2  # each side's best of this many: other work on the machine only ever slows a run

Row = tuple[str, str, str, str]


def _long(record: dict[str, Any]) -> bool:
    """Short prompt, long reply: longer than FULL_LENGTH tokens, with the reply inside them."""
    prompt = len(record["instruction"]) + len(record.get("input", ""))
    return prompt < 200 and len(record["output"]) > 1200


def rows(folder: Path, runs: int = RUNS) -> list[Row]:
    cache = folder / "models"
    full = alpaca_records(folder / "full-length.jsonl", keep=_long, limit=STEPS * BATCH)
    natural = alpaca_records(folder / "natural.jsonl", limit=STEPS * BATCH)
    cold = run_runner(_job(folder / "cold", full, cache, FULL_LENGTH, steps=1))
    # Runner and script take turns, so that both meet whatever else the machine is doing.
    fixed = [_pair(folder / f"fixed-{i}", full, cache, FULL_LENGTH) for i in range(runs)]
    whole = [_pair(folder / f"whole-{i}", natural, cache, NATURAL_LENGTH) for i in range(runs)]
    runner = min((r for r, _ in fixed), key=lambda t: median(_runner_steps(t)))
    script = min((s for _, s in fixed), key=lambda t: median(script_report(t)["steps"]))
    runner_whole = min((r for r, _ in whole), key=lambda t: t.seconds)
    script_whole = min((s for _, s in whole), key=lambda t: t.seconds)
    return [
        *_overhead_rows(runner, script),
        _end_to_end_row(runner_whole, script_whole),
        *_startup_rows(runner_whole, cold),
    ]


def _pair(folder: Path, records: Path, cache: Path, length: int) -> tuple[Timed, Timed]:
    runner = run_runner(_job(folder / "runner", records, cache, length))
    script = run_trainer_script(records, folder / "script", STEPS, BATCH, length)
    return runner, script


def _summary(timed: Timed) -> dict[str, Any]:
    summary: dict[str, Any] = timed.last("finished")["summary"]
    return summary


def _runner_steps(timed: Timed) -> list[float]:
    """Seconds per step, from the progress events' times (every step reports at this pace)."""
    marks = [(0, e["time"]) for e in timed.events() if e["event"] == "started"]
    marks += [(e["step"], e["time"]) for e in timed.events() if e["event"] == "progress"]
    return [
        (later - earlier) / (step - previous)
        for (previous, earlier), (step, later) in itertools.pairwise(marks)
    ]


def _job(folder: Path, records: Path, cache: Path, length: int, steps: int | None = None) -> Path:
    return make_job(
        folder, records, cache, max_steps=steps or STEPS, batch_size=BATCH, max_seq_length=length
    )


def _overhead_rows(runner: Timed, script: Timed) -> list[Row]:
    # Every step is BATCH x FULL_LENGTH real tokens on both sides; the median step resists the
    # moments another process takes the cores.
    tokens = BATCH * FULL_LENGTH
    ours = tokens / median(_runner_steps(runner))
    theirs = tokens / median(script_report(script)["steps"])
    memory = runner.peak_rss_mb / script.peak_rss_mb
    return [
        (
            f"LoRA training speed at the median step, SmolLM2-135M on CPU, {STEPS} steps of "
            f"{BATCH} x {FULL_LENGTH} tokens",
            f"{ours:.0f} tokens/s ({ours / theirs:.2f}x)",
            f"transformers Trainer script {theirs:.0f} tokens/s; budget 0.95x",
            "pass" if ours / theirs >= 0.95 else "FAIL",
        ),
        (
            "Peak memory of that run (whole process)",
            f"{runner.peak_rss_mb:.0f} MB ({memory:.2f}x)",
            f"Trainer script {script.peak_rss_mb:.0f} MB; budget 1.1x",
            "pass" if memory <= 1.1 else "FAIL",
        ),
    ]


def _end_to_end_row(runner: Timed, script: Timed) -> Row:
    ratio = runner.seconds / script.seconds
    tokens = runner.last("finished")["summary"]["tokens"]
    return (
        f"Whole LoRA run (start, load, {STEPS} steps of {BATCH} Alpaca examples up to "
        f"{NATURAL_LENGTH} tokens, save), SmolLM2-135M GGUF",
        f"{runner.seconds:.1f} s ({ratio:.2f}x), {tokens} tokens",
        f"Trainer script {script.seconds:.1f} s; LLaMA-Factory {LLAMA_FACTORY_RATIO}x of it",
        "pass" if ratio < LLAMA_FACTORY_RATIO else "FAIL",
    )


def _startup_rows(warm: Timed, cold: Timed) -> list[Row]:
    return [
        (
            "Runner start-up: spawn to first progress event (converted base cached)",
            f"{warm.first_progress_seconds:.1f} s",
            "reported",
            "reported",
        ),
        (
            "Runner start-up on the first use of a GGUF file (dequantize, save, load)",
            f"{cold.first_progress_seconds:.1f} s",
            "once per file; later runs reuse the converted folder",
            "reported",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_overhead")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of each side; best counts")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtm-bench-train-") as folder:
        table = rows(Path(folder), options.runs)
    for what, figure, baseline, verdict in table:
        print(f"{verdict:>8}  {what}: {figure}  [{baseline}]")
    return 0 if all(row[3] != "FAIL" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
