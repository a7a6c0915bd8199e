"""`python -m app --run-hardware`: print one JSON object describing what this machine can train on.

The window asks for it on first run and in its About box (app.hardware reads the answer). It is
a child process because importing torch and initialising CUDA take seconds that the window must
not wait for. It lives beside the trainer because it is the other place that imports torch; a
build without torch (the GUI-only one) still answers, with `"torch": null`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(_argv: list[str] | None = None) -> int:
    print(json.dumps(probe()), flush=True)
    return 0


def probe() -> dict[str, Any]:
    """CPU cores, memory, and what torch sees (its version, CUDA devices, Apple MPS)."""
    import psutil

    report: dict[str, Any] = {
        "cpu_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": sys.platform,
        "torch": None,
        "cuda": [],
        "mps": False,
    }
    try:
        import torch
    except ImportError:  # the GUI-only build, or a setup without the train extra
        return report
    report["torch"] = torch.__version__
    report["cuda"] = _cuda_devices(torch)
    report["mps"] = bool(torch.backends.mps.is_available())
    return report


def _cuda_devices(torch: Any) -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        devices.append(
            {"index": index, "name": properties.name, "memory_bytes": properties.total_memory}
        )
    return devices
