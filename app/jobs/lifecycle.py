"""The one state machine of a job. Every status change in the app goes through `transition`.

    queued -> running -> completed
                   |---> failed      -> queued (retry: starts over)
                   |---> cancelled   -> queued (resume: from the last checkpoint)
                   '---> interrupted -> queued (resume: from the last checkpoint)

A queued job can also be cancelled before it starts.
"""

from __future__ import annotations

from enum import StrEnum

from app.errors import ConflictError


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
FINISHED = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
)
RESUMABLE = frozenset({JobStatus.CANCELLED, JobStatus.INTERRUPTED})
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: FINISHED,
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
    JobStatus.INTERRUPTED: frozenset({JobStatus.QUEUED}),
}


class IllegalTransition(ConflictError):
    """A status change the state machine does not allow."""


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(target) in _ALLOWED[JobStatus(current)]


def transition(current: JobStatus | str, target: JobStatus | str) -> JobStatus:
    """`target`, if a job may go there from `current`; IllegalTransition otherwise."""
    if not can_transition(current, target):
        raise IllegalTransition(
            f"A {JobStatus(current)} job cannot become {JobStatus(target)}"
            f"{_hint(JobStatus(current))}."
        )
    return JobStatus(target)


def _hint(current: JobStatus) -> str:
    if current is JobStatus.COMPLETED:
        return "; duplicate it to train again"
    if current is JobStatus.RUNNING:
        return " until it finishes; cancel it first"
    return ""
