"""What every benchmark needs: timing child processes, their peak memory, the machine, the data."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "follow",
    "instructions",
    "when",
    "the",
    "data",
    "is",
    "clean",
    "and",
    "the",
    "loss",
    "falls",
    "slowly",
    "over",
    "many",
    "steps",
    "while",
    "the",
    "rate",
    "decays",
    "and",
    "the",
    "adapter",
    "grows",
    "from",
    "a",
    "small",
    "rank",
]


@dataclass(frozen=True)
class ChildResult:
    seconds: float
    peak_rss_mb: float
    report: dict[str, object]


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
    }


def run_child(module: str, *args: str) -> ChildResult:
    """Run `python -m module args`: its wall time and its last stdout line, a JSON report
    (children report their own peak RSS, as `peak_rss_mb`)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{module} failed ({process.returncode}): {stderr[-2000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return ChildResult(seconds, float(report.get("peak_rss_mb", 0.0)), report)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine() -> str:
    cpus = os.cpu_count()
    memory = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kb = int(meminfo.readline().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpus} cores{memory}, "
        f"Python {platform.python_version()}"
    )


def alpaca_jsonl(records: int) -> Path:
    """A generated Alpaca JSON Lines file of `records` records (cached in bench/out)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"alpaca-{records}.jsonl"
    if path.exists():
        return path
    rng = random.Random(1234)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for number in range(records):
            record = {
                "instruction": " ".join(rng.choices(WORDS, k=rng.randint(4, 24))),
                "input": "" if number % 3 else " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
                "output": " ".join(rng.choices(WORDS, k=rng.randint(8, 80))),
            }
            out.write(json.dumps(record) + "\n")
    partial.replace(path)
    return path


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
