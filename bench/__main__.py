"""`make bench`: every figure printed beside its baseline, and written to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, alpaca_jsonl, child_env, machine, median, run_child

RESULTS = ROOT / "bench" / "RESULTS.md"


def time_to_first_paint(args: list[str], home: Path) -> float:
    """Seconds from spawning the process to its `first_paint` line."""
    env = {**child_env(), "MTM_HOME": str(home)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if '"first_paint"' in line:
            elapsed = time.perf_counter() - start
            heavy = json.loads(line).get("heavy_modules", [])
            if heavy:
                raise RuntimeError(f"heavy modules loaded before the first paint: {heavy}")
            break
    else:
        raise RuntimeError(f"{args} never painted")
    process.wait(timeout=60)
    return elapsed


def bench_startup(runs: int, home: Path) -> list[tuple[str, str, str, str]]:
    time_to_first_paint(["-m", "app", "--smoke"], home)  # creates the database once
    app = [time_to_first_paint(["-m", "app", "--smoke"], home) for _ in range(runs)]
    hello = [time_to_first_paint(["-m", "bench.child_hello"], home) for _ in range(runs)]
    verdict = "pass" if median(app) < 1.0 else "FAIL"
    return [
        (
            f"Cold start to first painted window (`--smoke`), median of {runs}",
            f"{median(app):.3f} s",
            f"budget 1.0 s; bare PySide6 QLabel window {median(hello):.3f} s",
            verdict,
        )
    ]


def bench_import(records: int, home: Path) -> tuple[list[tuple[str, str, str, str]], str]:
    path = alpaca_jsonl(records)
    size_mb = path.stat().st_size / 1e6
    pandas = run_child("bench.child_pandas", str(path))
    ours = run_child("bench.child_import", str(path), str(home), f"bench-{records}")
    ratio = float(ours.report["seconds"]) / float(pandas.report["seconds"])
    rows = [
        (
            f"Import {records:,}-record Alpaca JSONL ({size_mb:.0f} MB): parse, normalise, "
            "stats, write",
            f"{ours.report['seconds']:.2f} s ({ratio:.2f}x pandas)",
            f"pandas.read_json(lines=True) alone {pandas.report['seconds']:.2f} s; budget 1.5x",
            "pass" if ratio <= 1.5 else "FAIL",
        ),
        (
            "Peak memory of that import",
            f"{ours.peak_rss_mb:.0f} MB",
            f"pandas.read_json alone {pandas.peak_rss_mb:.0f} MB",
            "reported",
        ),
    ]
    return rows, str(ours.report["id"])


def bench_preview(home: Path, dataset_id: str) -> list[tuple[str, str, str, str]]:
    result = run_child("bench.child_preview", str(home), dataset_id)
    seconds = float(result.report["median_seconds"])
    return [
        (
            "Open the preview of that dataset (select, first page, paint), median of 7",
            f"{seconds * 1000:.0f} ms",
            "budget 300 ms",
            "pass" if seconds < 0.3 else "FAIL",
        )
    ]


def bench_heartbeat(records: int, home: Path) -> list[tuple[str, str, str, str]]:
    path = alpaca_jsonl(records)
    result = run_child("bench.child_heartbeat", str(path), str(home))
    worst = float(result.report["max_gap_ms"])
    return [
        (
            f"Longest GUI event-loop stall while the window imports {records:,} records "
            "(5 ms QTimer heartbeat)",
            f"{worst:.0f} ms (p99 {float(result.report['p99_gap_ms']):.0f} ms)",
            "budget 50 ms",
            "pass" if worst <= 50 else "FAIL",
        )
    ]


def bench_dispatch() -> list[tuple[str, str, str, str]]:
    result = run_child("bench.child_dispatch")
    worst = float(result.report["max_ms"])
    return [
        (
            "From a slot freeing to the next job's subprocess starting (20 jobs, 1 worker; "
            "includes the stand-in's own Python start-up)",
            f"median {float(result.report['median_ms']):.0f} ms, max {worst:.0f} ms",
            "budget 100 ms",
            "pass" if worst < 100 else "FAIL",
        )
    ]


def bench_jobs_heartbeat() -> list[tuple[str, str, str, str]]:
    result = run_child("bench.child_jobs_heartbeat")
    worst = float(result.report["max_gap_ms"])
    return [
        (
            "Longest GUI event-loop stall while two real tiny-model jobs stream progress "
            f"into the window ({result.report['events']} events)",
            f"{worst:.0f} ms (p99 {float(result.report['p99_gap_ms']):.0f} ms)",
            "budget 50 ms",
            "pass" if worst <= 50 else "FAIL",
        )
    ]


def bench_jobs_tab() -> list[tuple[str, str, str, str]]:
    result = run_child("bench.child_jobs_tab")
    opened, filtered = float(result.report["open_median_s"]), float(result.report["filter_max_s"])
    return [
        (
            "Open the Jobs tab with 10,000 jobs in the database (read, fill, paint), median of 5",
            f"{opened * 1000:.0f} ms",
            "budget 300 ms",
            "pass" if opened < 0.3 else "FAIL",
        ),
        (
            "Apply a name filter to those 10,000 jobs (filter and paint), worst of 15",
            f"{filtered * 1000:.0f} ms (median "
            f"{float(result.report['filter_median_s']) * 1000:.0f} ms)",
            "budget 100 ms",
            "pass" if filtered < 0.1 else "FAIL",
        ),
    ]


def bench_two_jobs() -> list[tuple[str, str, str, str]]:
    result = run_child("bench.child_two_jobs")
    ratio = float(result.report["ratio"])
    pair = " + ".join(f"{float(v):.0f}" for v in result.report["pair"])  # type: ignore[attr-defined]
    return [
        (
            "Two SmolLM2-135M LoRA jobs at once against one alone (tokens per second, the "
            "trainers' own figures)",
            f"{pair} = {float(result.report['together']):.0f} tok/s together ({ratio:.2f}x)",
            f"one job alone {float(result.report['alone']):.0f} tok/s; budget 0.9x",
            "pass" if ratio >= 0.9 else "FAIL",
        )
    ]


def bench_ray() -> list[tuple[str, str, str, str]]:
    report: dict[str, Any] = run_child("bench.child_ray").report
    remote, local = report["remote_delay"], report["local_delay"]
    return [
        (
            "Submission to the first progress event shown, a tiny job on a local Ray head "
            "(median of 3 warm runs)",
            f"{float(report['remote_first_progress_s']):.1f} s (the fresh head's first job "
            f"{float(report['remote_first_progress_cold_s']):.1f} s; head start "
            f"{float(report['head_start_s']):.1f} s)",
            "the same job here, trainer start to first progress "
            f"{float(report['local_first_progress_s']):.1f} s",
            "reported",
        ),
        (
            "Delay of a Ray job's live events (the trainer's timestamp to the app having it)",
            f"median {float(remote['median_ms']) / 1000:.2f} s, p90 "
            f"{float(remote['p90_ms']) / 1000:.2f} s, max {float(remote['max_ms']) / 1000:.2f} s",
            f"the same job here: median {float(local['median_ms']):.1f} ms, max "
            f"{float(local['max_ms']):.1f} ms (Ray's log tail reads the log once a second)",
            "reported",
        ),
    ]


def bench_chat() -> list[tuple[str, str, str, str]]:
    report: dict[str, Any] = run_child("bench.child_chat_latency").report
    rows = []
    for run, what in (("single", "a 2,000-token answer"), ("compare", "two at once (compare)")):
        worst, token = float(report[run]["max_gap_ms"]), report[run]["arrival_to_paint"]
        late = float(token["max_ms"])
        rows += [
            (
                f"Longest GUI event-loop stall while {what} streams into the playground "
                "(5 ms QTimer heartbeat)",
                f"{worst:.0f} ms (p99 {float(report[run]['p99_gap_ms']):.0f} ms)",
                "budget 50 ms",
                "pass" if worst <= 50 else "FAIL",
            ),
            (
                f"A token from the socket to the screen (written by the stand-in to painted), "
                f"{what}",
                f"max {late:.0f} ms (p99 {float(token['p99_ms']):.0f} ms, median "
                f"{float(token['median_ms']):.1f} ms)",
                "budget 20 ms",
                "pass" if late <= 20 else "FAIL",
            ),
        ]
    return rows


def bench_blob_upload() -> list[tuple[str, str, str, str]]:
    report = run_child("bench.child_blob_upload").report
    ratio = float(report["ratio"])
    grown = float(report["peak_rss_mb"]) - float(report["peak_rss_mb_before"])
    gibibytes = int(report["bytes"]) / 2**30  # type: ignore[call-overload]
    return [
        (
            f"Upload a {gibibytes:.1f} GiB blob to Ollama (the stand-in, in its own process) "
            "with the app's client",
            f"{float(report['client_mb_per_s']):.0f} MB/s ({ratio:.2f}x the bare upload)",
            f"bare streamed httpx upload {float(report['bare_mb_per_s']):.0f} MB/s; budget 0.8x",
            "pass" if ratio >= 0.8 else "FAIL",
        ),
        (
            "Peak memory grown by those uploads (constant memory: streamed in 1 MiB pieces)",
            f"{grown:.0f} MB",
            f"the blob is {gibibytes * 1024:.0f} MiB; hashing it in a worker thread runs at "
            f"{float(report['hash_mb_per_s']):.0f} MB/s, hashing then uploading (as publishing "
            f"does) at {float(report['hash_and_upload_mb_per_s']):.0f} MB/s",
            "pass" if grown < 100 else "FAIL",
        ),
    ]


def bench_pull() -> list[tuple[str, str, str, str]]:
    report = run_child("bench.child_pull_heartbeat").report
    worst = float(report["max_gap_ms"])
    return [
        (
            f"Longest GUI event-loop stall while a pull streams {int(report['lines']):,} "  # type: ignore[call-overload]
            "progress lines into the Models tab (5 ms QTimer heartbeat)",
            f"{worst:.0f} ms (p99 {float(report['p99_gap_ms']):.0f} ms)",
            "budget 50 ms",
            "pass" if worst <= 50 else "FAIL",
        )
    ]


def compile_sources() -> None:
    """Byte-compile app/ and ui/ as an installed package or the frozen app has them, even where
    PYTHONDONTWRITEBYTECODE keeps an editable checkout from caching its bytecode."""
    import compileall

    for folder in ("app", "ui"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def write_results(rows: list[tuple[str, str, str, str]]) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Last run: {stamp}, on {machine()}. Run `make bench` to refresh; figures are medians",
        "where several runs are made. The test suite never times anything.",
        "",
        "| What | Figure | Baseline | Verdict |",
        "|---|---|---|---|",
        *[
            f"| {what} | {figure} | {baseline} | {verdict} |"
            for what, figure, baseline, verdict in rows
        ],
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--only",
        choices=[
            "startup",
            "import",
            "heartbeat",
            "dispatch",
            "jobs",
            "chat",
            "ollama",
            "training",
            "frozen",
            "ray",
        ],
        help="run one part; writes nothing",
    )
    options = parser.parse_args()
    compile_sources()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mtm-bench-") as folder:
        home = Path(folder)
        if options.only in (None, "startup"):
            rows += bench_startup(options.runs, home / "startup")
        if options.only in (None, "import"):
            import_rows, dataset_id = bench_import(options.records, home / "data")
            rows += import_rows + bench_preview(home / "data", dataset_id)
        if options.only in (None, "heartbeat"):
            rows += bench_heartbeat(options.records, home / "heartbeat")
        if options.only in (None, "dispatch"):
            rows += bench_dispatch()
        if options.only in (None, "jobs"):
            rows += bench_jobs_tab() + bench_jobs_heartbeat() + bench_two_jobs()
        if options.only in (None, "chat"):
            rows += bench_chat()
        if options.only in (None, "ollama"):
            rows += bench_blob_upload() + bench_pull()
        if options.only in (None, "training"):
            from bench import train_batching, train_overhead

            rows += train_overhead.rows(home / "train-overhead")
            rows += train_batching.rows(home / "train-batching")
        if options.only in (None, "frozen"):  # the bundles `make package` left in dist/
            from bench import frozen

            rows += frozen.rows(options.runs, home / "frozen")
        if options.only in (None, "ray") and importlib.util.find_spec("ray") is not None:
            rows += bench_ray()  # needs `make ray-tier`
    for what, figure, baseline, verdict in rows:
        print(f"{verdict:>8}  {what}: {figure}  [{baseline}]")
    if options.only is None:
        write_results(rows)
        print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0 if all(row[3] != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
