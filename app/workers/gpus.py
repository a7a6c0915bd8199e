"""Which GPUs a job gets: each job is placed on a GPU its memory estimate fits on, beside what
already runs there, and is handed it through CUDA_VISIBLE_DEVICES; a job that fits nowhere now
waits, and one that could never fit is refused with a sentence.

GPUs are found with `nvidia-smi` (no torch in this process).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass

from app.errors import BadInputError
from app.jobs.estimate import gigabytes

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_QUERY = ["--query-gpu=index,name,memory.total,memory.used", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    used_bytes: int  # by other programs when the pool started


def discover_gpus() -> list[Gpu]:
    """The NVIDIA GPUs of this machine; none where there is no driver."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        output = subprocess.run(
            [tool, *_QUERY], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("nvidia-smi failed; training on the CPU", extra={"error": str(error)})
        return []
    return [_parse(line) for line in output.splitlines() if line.strip()]


def _parse(line: str) -> Gpu:
    index, name, total, used = (part.strip() for part in line.split(","))
    return Gpu(int(index), name, int(float(total)) * _MIB, int(float(used)) * _MIB)


class GpuAllocator:
    """Keeps track of what each running job was given, by its memory estimate.

    Thread-safe: the pool places jobs on its claim thread and releases them on its own.
    """

    def __init__(self, gpus: list[Gpu]) -> None:
        self.gpus = gpus
        self._placed: dict[str, tuple[int, int]] = {}  # job -> (gpu index, bytes reserved)
        self._lock = threading.Lock()

    def place(self, job_id: str, need_bytes: int | None) -> list[int] | None:
        """The GPU indices for `job_id`, or None when none has room now.

        With no estimate (`None`), a job gets a GPU that nothing else of ours runs on.
        BadInputError when the job could not fit even on an empty GPU.
        """
        largest = max(gpu.total_bytes - gpu.used_bytes for gpu in self.gpus)
        if need_bytes is not None and need_bytes > largest:
            raise BadInputError(
                f"The job needs about {gigabytes(need_bytes)} of GPU memory and the largest "
                f"free GPU has {gigabytes(largest)}; use QLoRA, a smaller batch or a shorter "
                "max sequence length."
            )
        with self._lock:
            for gpu in sorted(self.gpus, key=self._free, reverse=True):
                if self._fits(gpu, need_bytes):
                    self._placed[job_id] = (gpu.index, need_bytes or 0)
                    return [gpu.index]
        return None

    def release(self, job_id: str) -> None:
        with self._lock:
            self._placed.pop(job_id, None)

    def _free(self, gpu: Gpu) -> int:
        reserved = sum(size for index, size in self._placed.values() if index == gpu.index)
        return gpu.total_bytes - gpu.used_bytes - reserved

    def _fits(self, gpu: Gpu, need_bytes: int | None) -> bool:
        if need_bytes is None:
            return all(index != gpu.index for index, _size in self._placed.values())
        return need_bytes <= self._free(gpu)
