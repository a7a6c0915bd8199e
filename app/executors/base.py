"""The one interface for where a job runs: this machine's worker pool, or a cluster.

A caller of the jobs code sees the same thing either way: `submit` a job, `follow` its typed
events (app.events) until the run's last one (`finished` or `error`), `cancel` it, `fetch_results`
into the job's folder, and `reconcile` after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, Protocol

from app.events import Event
from app.jobs.spec import TrainingSpec

# What the place a job ran says of it after a restart: it still runs (follow it again), it has
# ended (follow it to read its last events), or it is not known there (the job is interrupted).
RemoteState = Literal["running", "ended", "unknown"]


class Executor(Protocol):
    """Runs jobs somewhere; `name` is the target a job's spec names (None for this machine)."""

    name: str | None

    def check(self) -> str:
        """What answers, in a few words (`Ray 2.60.0`); ExecutorError if it cannot run jobs."""
        ...

    def submit(self, job_id: str, spec: TrainingSpec, *, fresh: bool) -> None:
        """Start the job; `fresh` (a first start or a retry) drops an earlier run's outputs,
        otherwise (a resume) the run continues from its checkpoint."""
        ...

    def follow(self, job_id: str, *, skip: int = 0) -> Iterator[Event]:
        """The run's events after the first `skip`, as they come, ending with its last one."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Ask the run to checkpoint and stop; False when it had already ended."""
        ...

    def fetch_results(self, job_id: str, folder: Path) -> list[str]:
        """Copy the run's results into the job's local `folder`; return what was copied."""
        ...

    def reconcile(self, job_ids: Iterable[str]) -> dict[str, RemoteState]:
        """What the executor knows of each job the app has marked running."""
        ...
