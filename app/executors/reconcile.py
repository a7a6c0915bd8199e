"""After the app or a head restarts: match the remote jobs whose supervising process is gone with
their head, and take over the ones it still knows."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import update

from app.db.models import Job, utc_now
from app.db.session import Database
from app.executors.base import Executor, RemoteState
from app.jobs.lifecycle import JobStatus, transition
from app.jobs.service import Owner, owned_by, remote_orphans, take_over

log = logging.getLogger(__name__)


def reconcile_jobs(
    database: Database, executor: Executor, orphans: Mapping[str, Owner] | None = None
) -> dict[str, RemoteState]:
    """Each orphaned running job of `executor`'s target (`orphans`, else every one of that
    target whose process is gone), as its head knows it. Those it does not know (a head restart
    forgets every job) become interrupted, to be resumed from their checkpoint; the running and
    ended ones are for the caller to take over and follow again (with the events recorded so far
    skipped).

    A job whose supervising process lives is never asked about: it may be on its way to the head
    (claimed, not yet submitted), and that process follows it.
    """
    if orphans is None:
        orphans = remote_orphans(database).get(executor.name or "", {})
    states = executor.reconcile(list(orphans))
    unknown = {job_id: orphans[job_id] for job_id, state in states.items() if state == "unknown"}
    if unknown:
        _interrupt(database, unknown, executor.name or "this machine")
    return states


def adopt(
    database: Database, executor: Executor, worker: str, orphans: Mapping[str, Owner]
) -> list[str]:
    """Reconcile `orphans` with `executor`'s head and take over those still there; the jobs this
    process is now to follow. Another process that took a job over first keeps it."""
    states = reconcile_jobs(database, executor, orphans)
    return [
        job_id
        for job_id, state in states.items()
        if state in ("running", "ended") and take_over(database, job_id, worker, orphans[job_id])
    ]


def _interrupt(database: Database, owners: Mapping[str, Owner], cluster: str) -> None:
    error = f"The cluster {cluster} no longer knows this job (its head restarted); resume it."
    interrupted: list[str] = []
    with database.session() as session:
        for job_id, owner in owners.items():
            # Only while the owner is the one that was gone: a process that took the job over
            # meanwhile decides about it.
            changed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING, owned_by(owner))
                .values(
                    status=transition(JobStatus.RUNNING, JobStatus.INTERRUPTED),
                    finished_at=utc_now(),
                    error=error,
                    pid=None,
                    pid_started=None,
                    trainer_pid=None,
                )
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                interrupted.append(job_id)
    log.info("remote jobs interrupted", extra={"jobs": interrupted, "cluster": cluster})
