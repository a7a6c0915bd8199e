"""Where a run trains: the device, its number format, its threads and its free memory."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from app.jobs.spec import Device
from app.settings import Method
from app.training.errors import TrainingError


@dataclass(frozen=True)
class Placement:
    """The device, the dtype the base weights are loaded in, and the autocast dtype (if any)."""

    device: torch.device
    weights_dtype: torch.dtype
    compute_dtype: torch.dtype | None

    @property
    def kind(self) -> str:
        return self.device.type

    def describe(self) -> str:
        name = self.kind
        if self.kind == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        return name


def set_torch_threads(threads: int | None) -> None:
    """Use `threads` cores for torch's intra-op work, so concurrent jobs share the machine."""
    if threads is not None:
        torch.set_num_threads(threads)


def choose_placement(requested: Device, method: Method) -> Placement:
    """The device the spec asks for (auto: CUDA, then Apple MPS, then CPU) and its dtypes."""
    device = _choose_device(requested, method)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        # Full fine-tuning keeps fp32 master weights; the adapters' bases can live in bf16.
        weights = torch.float32 if method == "full" else torch.bfloat16
        return Placement(device, weights, torch.bfloat16)
    return Placement(device, torch.float32, None)


def _choose_device(requested: Device, method: Method) -> torch.device:
    if method == "qlora" and not torch.cuda.is_available():
        raise TrainingError(
            "device_unavailable",
            "QLoRA needs an NVIDIA GPU with CUDA and this machine has none: choose LoRA "
            "(same adapter, without 4-bit weights) or full fine-tuning instead.",
        )
    kind = _best_available() if requested == "auto" else requested
    _check_available(kind)
    # An index for CUDA: weights are placed on exactly this device (the worker sets which).
    return (
        torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device(kind)
    )


def _best_available() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _check_available(requested: str) -> None:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "device_unavailable",
            "the spec asks for CUDA but this torch has no usable CUDA device: install a CUDA "
            "build of torch, or choose device auto or cpu.",
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(
            "device_unavailable",
            "the spec asks for Apple MPS, which this machine does not offer: choose auto or cpu.",
        )


def peak_memory_mb(device: torch.device) -> float | None:
    """The most memory this run has held on `device`, in MB, where that can be known."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 1e6  # the current figure: MPS keeps no peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def available_memory(device: torch.device) -> int | None:
    """Bytes the run could still allocate on `device`, or None where that is unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory()) - int(torch.mps.driver_allocated_memory())
    return _available_ram()


def _available_ram() -> int | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():  # Linux: MemAvailable counts reclaimable cache, unlike sysconf
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # Windows has no sysconf
        return None
