"""Reaching a remote job's cluster from any process: the executor of a named cluster, and
cancelling a job where it runs (the CLI, or a window that does not follow the job itself)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.db.models import Job
from app.db.session import Database
from app.executors.base import Executor
from app.jobs.lifecycle import JobStatus
from app.jobs.service import cancel_job, target_of

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[str], Executor]
"""The executor of the cluster with this name (ClusterStore's cluster and token by default)."""


def cluster_executors(database: Database) -> ExecutorFactory:
    """Executors for the clusters registered in `database`, with their tokens."""

    def open_named(name: str) -> Executor:
        # Imported here: a process that never meets a remote job never loads the HTTP clients.
        from app.executors.clusters import ClusterStore
        from app.executors.ray import open_executor

        store = ClusterStore(database)
        cluster = store.get(name)  # NotFoundError, one sentence, for a cluster since removed
        return open_executor(cluster, store.token(cluster))

    return open_named


def close_executor(executor: Executor) -> None:
    """Close the executor's connections where it has any (the protocol does not require it)."""
    close = getattr(executor, "close", None)
    if callable(close):
        close()


def cancel_where_it_runs(
    database: Database, job_id: str, executors: ExecutorFactory | None = None
) -> Job:
    """Cancel a job from any process: a queued one at once, a local one through its trainer
    (app.jobs.service.cancel_job), and one running on a cluster through its head, which asks the
    trainer to checkpoint and stop. The process that follows the remote run records the end
    when the head reports it (or, with none following, the next one to start does)."""
    job = cancel_job(database, job_id)
    target = target_of(job.spec)
    if job.status != JobStatus.RUNNING or target is None:
        return job
    executor = (executors or cluster_executors(database))(target)
    try:
        stopped = executor.cancel(job_id)  # ExecutorError, one sentence, when the head is away
    finally:
        close_executor(executor)
    log.info("asked the cluster to stop the job", extra={"job": job_id, "was_running": stopped})
    return job
