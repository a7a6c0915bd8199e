"""The Ray executor: a job of this app run on a Ray cluster through its Jobs REST API.

Submit stages the dataset and spec in the cluster's storage, uploads the code bundle unless the
head has it, and submits with the app's job id as the submission id. Follow reads the trainer's
event lines out of the driver log, reconnecting (and skipping what it already delivered) when the
socket drops, and ends the stream with the run's last event like a local trainer does.

A resume or retry reuses the job's id, and the head appends every run of an id to one log. Each
submission's entrypoint therefore carries a token of its own (`MTM_RUN=<token> python -m …`),
which the head writes into the log as that run starts; following reads the current run's
entrypoint from the head and leaves the earlier runs' lines out.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from app import APP_ID
from app.events import ErrorEvent, Event, FinishedEvent
from app.executors import errors
from app.executors.base import RemoteState
from app.executors.bundle import build_bundle
from app.executors.clusters import Cluster
from app.executors.errors import ExecutorError, RemoteJobNotFound
from app.executors.events import LogEventDecoder, decode_frames, decode_log, run_line
from app.executors.log_socket import LogStreamLost
from app.executors.ray_client import JobDetails, JobSubmission, RayJobsClient
from app.executors.storage import Storage, open_storage, remote_spec, spec_bytes
from app.jobs.spec import TrainingSpec

log = logging.getLogger(__name__)

# Seconds the trainer has, after a stop, to finish its step and write a checkpoint before Ray
# kills it (Ray's default is 3 s: RAY_JOBS.md, "Stop grace period"). The local grace is 60 s.
STOP_WAIT_S = 120
RECONNECTS = 5
RUN_VARIABLE = "MTM_RUN"  # set in the entrypoint: the run's token (see the module's docstring)
_RECONNECT_DELAY_S = 2.0
_END_POLL_S = 0.5
_END_WAIT_S = 10.0  # the head closes the log socket as the job ends; its status follows soon


class RayExecutor:
    """Runs jobs on one Ray cluster."""

    def __init__(
        self,
        cluster: Cluster,
        client: RayJobsClient,
        storage: Storage | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        run_token: Callable[[], str] = lambda: secrets.token_hex(4),
    ) -> None:
        self.name: str | None = cluster.name
        self.cluster = cluster
        self.client = client
        self.storage = storage or open_storage(cluster.storage)
        self._sleep = sleep
        self._run_token = run_token

    def close(self) -> None:
        self.client.close()

    def check(self) -> str:
        version = self.client.check()
        self.storage.check()
        return f"Ray {version.ray_version or '?'} (Jobs API {version.version})"

    # -- submit ------------------------------------------------------------------------------

    def submit(self, job_id: str, spec: TrainingSpec, *, fresh: bool) -> None:
        remote = remote_spec(spec, threads=_threads(self.cluster))
        if self._still_there(job_id):
            return  # submitted before (an answer lost on the way): it runs already
        self.storage.stage_job(job_id, spec, remote, fresh)
        bundle = build_bundle(spec_bytes(remote))
        uploaded = self.client.ensure_package(bundle.uri, bundle.data)
        log.info("submitting", extra={"job": job_id, "package": bundle.uri, "uploaded": uploaded})
        self.client.submit(self.submission(job_id, bundle.uri, self._run_token()))

    def submission(self, job_id: str, package_uri: str, run: str) -> JobSubmission:
        """The job's submission; `run` (a token of this run's own) makes its entrypoint, and
        so the line the head logs as it starts, unlike any earlier run's of the same id."""
        return JobSubmission(
            entrypoint=f"{RUN_VARIABLE}={run} {self.storage.entrypoint(job_id)}",
            submission_id=job_id,
            runtime_env={
                "working_dir": package_uri,
                "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S), "PYTHONUNBUFFERED": "1"},
            },
            metadata={"app": APP_ID, "app_job_id": job_id, "run": run},
            entrypoint_num_cpus=self.cluster.cpus,
            entrypoint_num_gpus=self.cluster.gpus or None,
        )

    def _still_there(self, job_id: str) -> bool:
        """True when the head runs this job now; an ended one is deleted so its id is free
        for the resume or retry (the head refuses a second job with the same id)."""
        try:
            details = self.client.job(job_id)
        except RemoteJobNotFound:
            return False
        if not details.terminal:
            return True
        self.client.delete(job_id)
        return False

    # -- follow ------------------------------------------------------------------------------

    def follow(self, job_id: str, *, skip: int = 0) -> Iterator[Event]:
        delivered, last = skip, None
        current = run_line(job_id, self.client.job(job_id).entrypoint)
        decoder = LogEventDecoder(skip, current)
        details: JobDetails | None = None
        for attempt in range(RECONNECTS + 1):
            decoder = LogEventDecoder(delivered, current)
            try:
                for event in decode_frames(self.client.tail_logs(job_id), decoder):
                    delivered, last = delivered + 1, event
                    yield event
            except LogStreamLost:
                if attempt == RECONNECTS:
                    raise
                log.warning("log stream lost; reconnecting", extra={"job": job_id})
                self._sleep(_RECONNECT_DELAY_S * (attempt + 1))
                continue
            details = self._ended(job_id)
            if details.terminal or attempt == RECONNECTS:
                break
            # The head closed the stream cleanly, yet the job runs on (its log proxy to the
            # node's agent broke): follow it again rather than call it ended.
            log.warning("log stream closed while the job runs; reconnecting", extra={"job": job_id})
            self._sleep(_RECONNECT_DELAY_S * (attempt + 1))
        if details is None:
            details = self._ended(job_id)
        if not isinstance(last, FinishedEvent | ErrorEvent):
            # The socket may close before the last lines were sent: the whole log has them.
            events, decoder = decode_log(self.client.logs(job_id), delivered, current)
            yield from events
            last = events[-1] if events else last
        if not isinstance(last, FinishedEvent | ErrorEvent):
            yield self._last_event(details, decoder)

    def _ended(self, job_id: str) -> JobDetails:
        deadline = time.monotonic() + _END_WAIT_S
        details = self.client.job(job_id)
        while not details.terminal and time.monotonic() < deadline:
            self._sleep(_END_POLL_S)
            details = self.client.job(job_id)
        return details

    def _last_event(self, details: JobDetails, decoder: LogEventDecoder) -> Event:
        """The run ended without saying how: say it from what the head reports."""
        job_id = details.submission_id or "?"
        if details.status == "STOPPED":
            return FinishedEvent(status="cancelled")  # killed after the grace period
        if details.runtime_env_failed:
            error: ExecutorError = errors.runtime_env_failed(job_id, details.message or "")
            return ErrorEvent(kind="missing_dependency", message=error.message)
        if details.status == "SUCCEEDED":
            message = f"Job {job_id} ended on the cluster without reporting a result; retry it."
            return ErrorEvent(kind="internal", message=message)
        signal_name = errors.killed_by(details.driver_exit_code)
        if signal_name is not None:
            error = errors.job_killed(job_id, signal_name, list(decoder.other_lines))
        else:
            error = errors.job_failed(job_id, details.message or "", list(decoder.other_lines))
        return ErrorEvent(kind="internal", message=error.message, traceback=details.message)

    # -- the rest ----------------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        try:
            return self.client.stop(job_id)
        except RemoteJobNotFound:
            return False

    def fetch_results(self, job_id: str, folder: Path) -> list[str]:
        return self.storage.fetch_results(job_id, folder)

    def reconcile(self, job_ids: Iterable[str]) -> dict[str, RemoteState]:
        states: dict[str, RemoteState] = {}
        for job_id in job_ids:
            try:
                details = self.client.job(job_id)
            except RemoteJobNotFound:
                states[job_id] = "unknown"
                continue
            states[job_id] = "ended" if details.terminal else "running"
        return states


def _threads(cluster: Cluster) -> int | None:
    return max(1, int(cluster.cpus)) if cluster.cpus >= 1 else None


def open_executor(cluster: Cluster, token: str | None) -> RayExecutor:
    """The executor for `cluster`, talking to its head with `token`."""
    return RayExecutor(cluster, RayJobsClient(cluster.url, token=token))
