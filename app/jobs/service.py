"""Jobs as the app keeps them: create, list, cancel, resume, retry, delete, and the bookkeeping
the worker pool does (claim the next job, record its events, notice dead processes).

Every status change goes through `app.jobs.lifecycle.transition`; every write is a short session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.orm import Session

from app.datasets.repository import dataset_files, get_dataset
from app.db.models import Dataset, Job, JobMetric, utc_now
from app.db.session import Database
from app.errors import BadInputError, ConflictError, NotFoundError
from app.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    FinishedEvent,
    ProgressEvent,
    StartedEvent,
)
from app.jobs.lifecycle import RESUMABLE, RETRYABLE, JobStatus, transition
from app.jobs.spec import (
    SPEC_FILE,
    DatasetSource,
    TrainingHyperparameters,
    TrainingSpec,
    write_spec,
)
from app.paths import DataHome
from app.settings import AppSettings, field_errors

log = logging.getLogger(__name__)

QUEUE_SIGNAL_FILE = ".queue"  # touched when a job is queued: running pools watch it
RESULT_FOLDERS = ("checkpoints", "adapter", "merged")


@dataclass(frozen=True)
class NewJob:
    """What `create_job` needs; hyperparameters not given come from the settings."""

    dataset: str
    base_model: str
    name: str | None = None
    hyperparameters: dict[str, Any] | None = None
    merge: bool = False
    target: str | None = None  # a cluster's name; None runs the job on this machine


def job_dir(home: DataHome, job_id: str) -> Path:
    return home.jobs / job_id


# --- the user's actions ---------------------------------------------------------------------


def create_job(database: Database, home: DataHome, settings: AppSettings, new: NewJob) -> Job:
    """Validate the job, write its folder and spec, and queue it."""
    dataset = get_dataset(database, new.dataset)
    spec = build_spec(home, settings, dataset, new)
    job_id = secrets.token_hex(6)
    folder = job_dir(home, job_id)
    folder.mkdir(parents=True, mode=0o700)
    write_spec(spec, folder / SPEC_FILE)
    job = Job(
        id=job_id,
        name=(new.name or f"{dataset.name} · {spec.method}").strip()[:200],
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        base_model=spec.base_model,
        method=spec.method,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        artifacts={},
        summary={},
    )
    with database.session() as session:
        job.queue_position = _back_of_queue(session)
        session.add(job)
    signal_queue(home)
    return job


def build_spec(
    home: DataHome, settings: AppSettings, dataset: Dataset, new: NewJob
) -> TrainingSpec:
    """The spec of a new job, or BadInputError naming the field that is wrong."""
    base = settings.hyperparameters.model_dump()
    base["eval_fraction"] = dataset.validation_fraction
    values = {**base, **(new.hyperparameters or {})}
    files = dataset_files(home, dataset)
    try:
        hyperparameters = TrainingHyperparameters.model_validate(values)
        return TrainingSpec(
            base_model=_base_model(new.base_model),
            dataset=DatasetSource(records=files.records, split=files.split),
            hyperparameters=hyperparameters,
            model_cache=home.root / "models",
            target=new.target,
        ).model_copy(update={"output": {"merge": new.merge}} if new.merge else {})
    except ValidationError as error:
        field, message = next(iter(field_errors(error).items()))
        raise BadInputError(f"The job's {field or 'settings'} is not valid: {message}") from None


def _base_model(text: str) -> str:
    """A local path is kept absolute (the trainer runs in the job folder); an id stays as is."""
    candidate = Path(text).expanduser()
    if candidate.exists():
        return str(candidate.resolve())
    if text.startswith((".", "/", "~")) or text.endswith(".gguf"):
        raise BadInputError(
            f"The base model {text} does not exist; give a model folder, a .gguf "
            "file or a Hugging Face id."
        )
    return text.strip()


def list_jobs(database: Database, statuses: Iterable[str] | None = None) -> list[Job]:
    """Jobs, newest first, optionally only those in `statuses`."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id)
    if statuses is not None:
        query = query.where(Job.status.in_(list(statuses)))
    with database.session() as session:
        return list(session.scalars(query))


def get_job(database: Database, job_id: str) -> Job:
    with database.session() as session:
        return _find(session, job_id)


def cancel_job(database: Database, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop (SIGTERM to its
    trainer), and its worker records `cancelled` when the trainer has saved a checkpoint."""
    with database.session() as session:
        job = _find(session, job_id)
        if job.status == JobStatus.QUEUED:
            job.status = transition(job.status, JobStatus.CANCELLED)
            job.finished_at = utc_now()
            return job
        transition(job.status, JobStatus.CANCELLED)  # raises for a job that is not running
        trainer = job.trainer_pid
    if trainer is not None:
        _terminate(trainer)
    return job


def resume_job(database: Database, home: DataHome, job_id: str) -> Job:
    """Queue a cancelled or interrupted job again; it continues from its last checkpoint."""
    with database.session() as session:
        job = _find(session, job_id)
        if job.status not in RESUMABLE:
            raise BadInputError(
                f"Job {job.id} is {job.status}; only cancelled or interrupted jobs resume "
                "(retry starts a failed one over)."
            )
        _requeue(session, job)
    signal_queue(home)
    return job


def retry_job(database: Database, home: DataHome, job_id: str) -> Job:
    """Queue a failed (or stopped) job again from the start: its results so far are removed."""
    with database.session() as session:
        job = _find(session, job_id)
        if job.status not in RETRYABLE:
            raise BadInputError(f"Job {job.id} is {job.status}; only failed or stopped jobs retry.")
        _requeue(session, job)
        job.attempt += 1
        session.execute(delete(JobMetric).where(JobMetric.job_id == job.id))
    folder = job_dir(home, job_id)
    for name in RESULT_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    signal_queue(home)
    return job


def delete_job(database: Database, home: DataHome, job_id: str) -> None:
    """Remove a job that is not running, with its files."""
    with database.session() as session:
        job = _find(session, job_id)
        if job.status == JobStatus.RUNNING:
            raise BadInputError(f"Job {job.id} is running; cancel it before deleting it.")
        session.delete(job)
    shutil.rmtree(job_dir(home, job_id), ignore_errors=True)


def _requeue(session: Session, job: Job) -> None:
    job.status = transition(job.status, JobStatus.QUEUED)
    job.queue_position = _back_of_queue(session)
    job.error = None
    job.finished_at = None
    job.worker = job.pid = job.pid_started = job.trainer_pid = None


class QueueMove(StrEnum):
    UP = "up"
    DOWN = "down"
    FRONT = "front"
    BACK = "back"


# The dispatcher's order; created_at and id only break ties between equal positions.
QUEUE_ORDER = (Job.queue_position, Job.created_at, Job.id)


def move_job(database: Database, home: DataHome, job_id: str, move: QueueMove) -> Job:
    """Move a queued job up or down one place, or to the front or the back of the queue."""
    with database.session() as session:
        job = _find(session, job_id)
        if job.status != JobStatus.QUEUED:
            raise ConflictError(
                f"Job {job.id} is {job.status}; only queued jobs have a place in the queue."
            )
        queued = select(Job).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
        queue = list(session.scalars(queued))
        _renumber(queue)
        place = queue.index(job)
        target = {
            QueueMove.UP: max(place - 1, 0),
            QueueMove.DOWN: min(place + 1, len(queue) - 1),
            QueueMove.FRONT: 0,
            QueueMove.BACK: len(queue) - 1,
        }[move]
        queue.insert(target, queue.pop(place))
        _renumber(queue)
    signal_queue(home)
    return job


def queued_in_order(database: Database) -> list[Job]:
    """The queued jobs, the next to start first."""
    query = select(Job).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
    with database.session() as session:
        return list(session.scalars(query))


def queue_places(database: Database) -> dict[str, int]:
    """Each queued job's place in the queue: 1 starts next."""
    query = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
    with database.session() as session:
        return {job_id: place for place, job_id in enumerate(session.scalars(query), start=1)}


def _renumber(queue: list[Job]) -> None:
    """Give the queued jobs positions 1, 2, 3… in their list order."""
    for position, job in enumerate(queue, start=1):
        if job.queue_position != position:
            job.queue_position = position


def _back_of_queue(session: Session) -> float:
    last = session.scalar(select(func.max(Job.queue_position)))
    return (last or 0.0) + 1.0


def _find(session: Session, job_id: str) -> Job:
    key = job_id.strip()
    job = session.get(Job, key)
    if job is None and len(key) >= 4:
        matches = list(session.scalars(select(Job).where(Job.id.startswith(key)).limit(2)))
        job = matches[0] if len(matches) == 1 else None
    if job is None:
        raise NotFoundError(f"There is no job '{key}'; `mtm jobs list` shows the jobs there are.")
    return job


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just finished
        os.kill(pid, signal.SIGTERM)


# --- what the worker pool does ---------------------------------------------------------------


def signal_queue(home: DataHome) -> None:
    """Tell running pools (in this or another process) that the queue changed."""
    marker = home.jobs / QUEUE_SIGNAL_FILE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(utc_now().timestamp()), encoding="ascii")


def target_of(spec: object) -> str | None:
    """The cluster a job's spec (as stored) names; None: it runs on this machine."""
    target = spec.get("target") if isinstance(spec, dict) else None
    return target if isinstance(target, str) else None


def _runs_remotely(remote: bool) -> ColumnElement[bool]:
    """Jobs whose spec names a cluster (`remote`), or those that run on this machine."""
    target = func.json_extract(Job.spec, "$.target")
    return target.is_not(None) if remote else target.is_(None)


def next_queued(database: Database, *, remote: bool | None = None) -> Job | None:
    """The job at the front of the queue, not yet claimed: of those that run on this machine
    (`remote=False`), of those that run on a cluster (`remote=True`), or of all."""
    query = select(Job).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
    if remote is not None:
        query = query.where(_runs_remotely(remote))
    with database.session() as session:
        return session.scalars(query.limit(1)).first()


def claim(database: Database, job_id: str, worker: str) -> Job | None:
    """Mark the queued job as running for this process; None if another pool was first.

    The conditional UPDATE makes the claim safe when several pools share one database.
    """
    pid, started = process_identity()
    with database.session() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=transition(JobStatus.QUEUED, JobStatus.RUNNING),
                worker=worker,
                pid=pid,
                pid_started=started,
                started_at=utc_now(),
            )
        )
        return session.get(Job, job_id) if claimed.rowcount else None  # type: ignore[attr-defined]


def claim_next(database: Database, worker: str) -> Job | None:
    """Claim the oldest queued job; None when the queue is empty."""
    while (job := next_queued(database)) is not None:
        claimed = claim(database, job.id, worker)
        if claimed is not None:
            return claimed
    return None


def gpu_memory_needed(job: Job) -> int | None:
    """The job's GPU memory estimate (with gradient checkpointing, which the trainer turns on
    by itself when needed); None when the base model's shape cannot be read."""
    from app.jobs.estimate import EstimateUnavailable, estimate_memory

    spec = TrainingSpec.model_validate(job.spec)
    hyper = spec.hyperparameters
    try:
        estimate = estimate_memory(
            spec.base_model,
            spec.method,
            batch_size=hyper.batch_size,
            max_seq_length=hyper.max_seq_length,
            lora_r=hyper.lora_r,
            gradient_accumulation_steps=hyper.gradient_accumulation_steps,
            device="cuda",
        )
    except EstimateUnavailable:
        return None
    return estimate.checkpointed_bytes


def wants_gpu(job: Job) -> bool:
    return TrainingSpec.model_validate(job.spec).device in ("auto", "cuda")


def record_trainer(database: Database, job_id: str, trainer_pid: int) -> None:
    """Remember the trainer's pid, so `mtm jobs cancel` from anywhere can stop it."""
    with database.session() as session:
        _find(session, job_id).trainer_pid = trainer_pid


def apply_events(database: Database, job_id: str, events: Sequence[Event]) -> None:
    """Write a batch of the trainer's events: the job's latest figures and its metric points."""
    if not events:
        return
    with database.session() as session:
        job = _find(session, job_id)
        for event in events:
            _apply(session, job, event)


def _apply(session: Session, job: Job, event: Event) -> None:
    if isinstance(event, StartedEvent):
        job.total_steps, job.step = event.total_steps, event.resume_step
    elif isinstance(event, ProgressEvent):
        job.step, job.total_steps = event.step, event.total_steps
        job.loss, job.tokens_per_second, job.eta_seconds = (
            event.loss,
            event.tokens_per_second,
            event.eta_seconds,
        )
        session.add(_metric(job.id, event))
    elif isinstance(event, EvalEvent):
        job.eval_loss = event.eval_loss
        session.add(JobMetric(job_id=job.id, step=event.step, eval_loss=event.eval_loss))
    elif isinstance(event, CheckpointEvent):
        job.artifacts = {**job.artifacts, "checkpoint": event.path}
    elif isinstance(event, ErrorEvent):
        job.error = event.message


def _metric(job_id: str, event: ProgressEvent) -> JobMetric:
    return JobMetric(
        job_id=job_id,
        step=event.step,
        epoch=event.epoch,
        loss=event.loss,
        learning_rate=event.learning_rate,
        tokens_per_second=event.tokens_per_second,
    )


def finish_job(
    database: Database, job_id: str, finished: FinishedEvent | None, failure: str | None
) -> Job:
    """Record how the trainer ended: its `finished` event, or why it ended without one."""
    with database.session() as session:
        job = _find(session, job_id)
        if finished is not None and failure is None:
            job.status = transition(job.status, finished.status)
            job.artifacts = {**job.artifacts, **finished.artifacts}
            if finished.summary is not None:
                job.summary = {**(job.summary or {}), **finished.summary.model_dump(mode="json")}
        else:
            job.status = transition(job.status, JobStatus.FAILED)
            job.error = failure or job.error or "The trainer stopped without saying why."
        if job.status == JobStatus.COMPLETED:
            job.error = None
        job.finished_at = utc_now()
        job.pid = job.pid_started = job.trainer_pid = None
        return job


def interrupt_orphans(database: Database) -> list[str]:
    """Jobs marked running whose supervising process is gone become interrupted.

    A job whose process is alive is never touched, whichever process looks. Nor is a job
    running on a cluster: it outlives the app, and reconciling with its head decides it
    (app.executors.reconcile).
    """
    interrupted: list[str] = []
    running = select(Job).where(Job.status == JobStatus.RUNNING, _runs_remotely(False))
    with database.session() as session:
        for job in session.scalars(running):
            if not process_alive(job.pid, job.pid_started):
                job.status = transition(job.status, JobStatus.INTERRUPTED)
                job.finished_at = utc_now()
                job.error = "Its process stopped (a crash, a kill or a power cut); resume it."
                interrupted.append(job.id)
    if interrupted:
        log.info("jobs interrupted", extra={"jobs": interrupted})
    return interrupted


Owner = tuple[int | None, float | None]
"""The process that supervises a running job: its pid and start time, as the job row has them."""


def remote_orphans(database: Database) -> dict[str, dict[str, Owner]]:
    """Running jobs on a cluster whose supervising process is gone, with that process, by
    cluster: another process (this one after a restart, or a second window) is to follow them
    (take_over)."""
    running = select(Job.id, Job.spec, Job.pid, Job.pid_started).where(
        Job.status == JobStatus.RUNNING, _runs_remotely(True)
    )
    with database.session() as session:
        rows = list(session.execute(running))
    orphans: dict[str, dict[str, Owner]] = {}
    for job_id, spec, pid, started in rows:
        target = target_of(spec)
        if target is not None and not process_alive(pid, started):
            orphans.setdefault(target, {})[job_id] = (pid, started)
    return orphans


def take_over(database: Database, job_id: str, worker: str, owner: Owner) -> bool:
    """Make this process the supervisor of a running job that `owner` left; False when the job
    has ended or another process took it over first.

    Like `claim`, a conditional UPDATE: of several processes that find the same orphan, exactly
    one follows it, and the others see its new, living owner.
    """
    pid, started = process_identity()
    with database.session() as session:
        taken = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING, owned_by(owner))
            .values(worker=worker, pid=pid, pid_started=started)
        )
        return bool(taken.rowcount)  # type: ignore[attr-defined]


def owned_by(owner: Owner) -> ColumnElement[bool]:
    """Jobs whose supervising process is still `owner` (a condition for an UPDATE)."""
    pid, started = owner
    return and_(
        Job.pid.is_(None) if pid is None else Job.pid == pid,
        Job.pid_started.is_(None) if started is None else Job.pid_started == started,
    )


def process_identity() -> tuple[int, float]:
    """This process's pid and start time (the pair survives pid reuse); read once per process,
    as the dispatcher claims jobs on the GUI thread."""
    pid = os.getpid()
    known = _IDENTITY.get(pid)
    if known is None:
        import psutil

        known = _IDENTITY[pid] = (pid, psutil.Process(pid).create_time())
    return known


_IDENTITY: dict[int, tuple[int, float]] = {}  # by pid, so a forked child reads its own


def process_alive(pid: int | None, started: float | None) -> bool:
    import psutil

    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
