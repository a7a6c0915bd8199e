"""After the app or a head restarts: match the jobs marked running on a cluster with the head."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.db.models import Job, utc_now
from app.db.session import Database
from app.executors.base import Executor, RemoteState
from app.jobs.lifecycle import JobStatus, transition

log = logging.getLogger(__name__)


def reconcile_jobs(database: Database, executor: Executor) -> dict[str, RemoteState]:
    """Each running job of `executor`'s target, as its head knows it; those it does not know
    (a head restart forgets every job) become interrupted, to be resumed from their checkpoint.
    The running and ended ones are for the caller to follow again (with the events recorded
    so far skipped)."""
    with database.session() as session:
        running = select(Job.id, Job.spec).where(Job.status == JobStatus.RUNNING)
        ids = [
            job_id for job_id, spec in session.execute(running) if _target(spec) == executor.name
        ]
    states = executor.reconcile(ids)
    unknown = [job_id for job_id, state in states.items() if state == "unknown"]
    if unknown:
        _interrupt(database, unknown, executor.name or "this machine")
    return states


def _interrupt(database: Database, job_ids: list[str], cluster: str) -> None:
    with database.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids))):
            if job.status != JobStatus.RUNNING:
                continue  # it ended meanwhile
            job.status = transition(job.status, JobStatus.INTERRUPTED)
            job.finished_at = utc_now()
            job.error = (
                f"The cluster {cluster} no longer knows this job (its head restarted); resume it."
            )
            job.pid = job.pid_started = job.trainer_pid = None
    log.info("remote jobs interrupted", extra={"jobs": job_ids, "cluster": cluster})


def _target(spec: object) -> str | None:
    target = spec.get("target") if isinstance(spec, dict) else None
    return target if isinstance(target, str) else None
