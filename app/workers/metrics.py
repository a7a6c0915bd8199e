"""Prometheus metrics for a headless pool (`mtm worker run --metrics-port N`), on 127.0.0.1.

Queue depth is read from the database at each scrape (so it counts jobs queued by any process);
the rest is fed by the pool's signals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select

from app.db.models import Job
from app.db.session import Database
from app.events import Event, ProgressEvent


class PoolMetrics:
    """The metrics of one pool; `serve(port)` starts the HTTP endpoint."""

    def __init__(self, database: Database) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self._server: Any = None
        self._thread: Any = None
        self._database = database
        self._started: dict[str, float] = {}
        self.workers_busy = Gauge(
            "mtm_workers_busy", "Workers running a job", registry=self.registry
        )
        self.outcomes = Counter(
            "mtm_jobs_finished", "Jobs finished, by outcome", ["status"], registry=self.registry
        )
        self.durations = Histogram(
            "mtm_job_duration_seconds",
            "Wall time of finished jobs",
            buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
            registry=self.registry,
        )
        self.tokens_per_second = Gauge(
            "mtm_training_tokens_per_second",
            "Latest throughput per job",
            ["job"],
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(database))

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:`port` from a daemon thread, until `close()`."""
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(
            port, addr="127.0.0.1", registry=self.registry
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def on_job_started(self, job_id: str) -> None:
        self._started[job_id] = time.monotonic()
        self.workers_busy.inc()

    def on_job_event(self, job_id: str, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.tokens_per_second.labels(job=job_id).set(event.tokens_per_second)

    def on_job_finished(self, job_id: str, status: str) -> None:
        self.workers_busy.dec()
        self.outcomes.labels(status=status).inc()
        started = self._started.pop(job_id, None)
        if started is not None:
            self.durations.observe(time.monotonic() - started)
        with contextlib.suppress(KeyError):  # a job that never reported progress
            self.tokens_per_second.remove(job_id)


class _QueueDepth:
    """A collector that counts queued jobs when Prometheus scrapes."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._database.session() as session:
            queued = session.scalar(select(func.count()).where(Job.status == "queued")) or 0
        yield GaugeMetricFamily("mtm_queue_depth", "Jobs waiting to start", value=queued)
