"""What this machine can train on: CPU cores, memory, CUDA GPUs or Apple MPS, torch's version.

The facts come from a child process (`--run-hardware`, app.training.hardware_probe) that prints
one JSON object, because torch must not load in the window's process and its import alone takes
seconds. `probe_hardware` runs that child and reads its answer; a caller may give another
command (a test prints a fixed answer), so everything past the process boundary is the real code.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import KnownError
from app.paths import self_command

log = logging.getLogger(__name__)

CHILD_FLAG = "--run-hardware"
# A cold import of torch plus CUDA's initialisation can take half a minute on a slow disk.
PROBE_TIMEOUT_S = 60.0
_POLL_S = 0.1
_GIB = 1024**3


class ProbeCancelled(Exception):
    """The caller no longer wants the answer (the window is closing)."""


class CudaDevice(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    name: str
    memory_bytes: int = Field(ge=0)

    def describe(self) -> str:
        return f"{self.name} ({gib(self.memory_bytes)})"


class HardwareReport(BaseModel):
    """What the probe found; `torch` is None where torch is not installed."""

    model_config = ConfigDict(frozen=True)

    cpu_cores: int = Field(ge=1)
    memory_bytes: int = Field(ge=0)
    platform: str = ""
    torch: str | None = None
    cuda: tuple[CudaDevice, ...] = ()
    mps: bool = False

    @property
    def accelerator(self) -> str:
        """One phrase: the GPUs found, or that training runs on the CPU."""
        if self.cuda:
            return "CUDA: " + ", ".join(device.describe() for device in self.cuda)
        if self.mps:
            return "Apple MPS (the GPU shares the machine's memory)"
        if self.torch is None:
            return "no GPU check (torch is not installed in this build)"
        return "no CUDA or MPS GPU: training runs on the CPU"


def gib(size: int) -> str:
    """A memory size the way GPU makers print it (80 GB for an 80 GiB card)."""
    value = size / _GIB
    return f"{value:.0f} GB" if value >= 10 else f"{value:.1f} GB"


def size_text(size: int) -> str:
    """A file's size: MB below a gigabyte, else as `gib` says it."""
    return f"{size / 1024**2:.0f} MB" if size < _GIB else gib(size)


def probe_command() -> list[str]:
    return self_command(CHILD_FLAG)


def probe_hardware(
    command: Sequence[str] | None = None,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    cancelled: Callable[[], bool] | None = None,
) -> HardwareReport:
    """Run the probe (this app's `--run-hardware` unless `command` is given) and read its report.

    Raises KnownError, in one sentence, when it fails, times out or answers something else, and
    ProbeCancelled (after stopping the child) once `cancelled()` turns true.
    """
    output = _run(list(command or probe_command()), timeout_s, cancelled)
    return parse_report(output)


def parse_report(output: str) -> HardwareReport:
    """The report in the probe's last line of output."""
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        return HardwareReport.model_validate_json(lines[-1] if lines else "")
    except ValidationError as error:
        log.warning("hardware probe answered nonsense", extra={"output": output[-2000:]})
        raise KnownError(
            "The hardware check answered something unreadable; reinstall the app if this "
            "persists (the log has its output)."
        ) from error


def _run(command: list[str], timeout_s: float, cancelled: Callable[[], bool] | None) -> str:
    try:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
    except OSError as error:
        raise KnownError(
            f"The hardware check could not start ({error.strerror or error}); reinstall the app."
        ) from error
    with child:
        stdout, stderr = _wait(child, timeout_s, cancelled)
    if child.returncode != 0:
        log.warning(
            "hardware probe failed",
            extra={"exit_code": child.returncode, "stderr": stderr[-4000:]},
        )
        raise KnownError(
            f"The hardware check failed (exit code {child.returncode}); the log has its "
            "output, and training still works on the CPU."
        )
    return stdout


def _wait(
    child: subprocess.Popen[bytes], timeout_s: float, cancelled: Callable[[], bool] | None
) -> tuple[str, str]:
    """The child's output; it is killed on a timeout or a cancel (it holds nothing to save)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out, err = child.communicate(timeout=_POLL_S)
            return out.decode(errors="replace"), err.decode(errors="replace")
        except subprocess.TimeoutExpired:
            stop = cancelled is not None and cancelled()
            if not stop and time.monotonic() < deadline:
                continue
            child.kill()
            child.communicate()
            if stop:
                raise ProbeCancelled from None
            raise KnownError(
                f"The hardware check did not answer within {timeout_s:g} seconds; the "
                "machine may be very busy, so try again from Help → Welcome."
            ) from None
