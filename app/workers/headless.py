"""`mtm worker run`: the window's worker pool in a QCoreApplication, with no window."""

from __future__ import annotations

import signal
import sys

from PySide6.QtCore import QCoreApplication, QTimer

from app.db.session import Database
from app.errors import KnownError
from app.paths import DataHome
from app.workers.metrics import PoolMetrics
from app.workers.pool import WorkerPool

EXIT_SIGNALLED = 130
_SIGNAL_WAKE_MS = 250


def run_pool(
    database: Database,
    home: DataHome,
    workers: int,
    *,
    until_idle: bool,
    metrics_port: int | None = None,
) -> int:
    """Run queued jobs until SIGINT/SIGTERM (or, with `until_idle`, until none is left)."""
    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])
    pool = WorkerPool(database, home, workers)
    # Kept in this frame, which lives as long as the event loop runs.
    metrics = None if metrics_port is None else _serve_metrics(pool, database, metrics_port)
    pool.job_finished.connect(lambda job, status: print(f"{job}: {status}", flush=True))
    if until_idle:
        pool.idle.connect(app.quit)
    signalled = _quit_on_signals(app)
    QTimer.singleShot(0, pool.start)
    app.exec()
    pool.shutdown()
    if metrics is not None:
        metrics.close()  # running jobs checkpoint and become interrupted, to resume next time
    return EXIT_SIGNALLED if signalled else 0


def _serve_metrics(pool: WorkerPool, database: Database, port: int) -> PoolMetrics:
    metrics = PoolMetrics(database)
    pool.job_started.connect(metrics.on_job_started)
    pool.job_event.connect(metrics.on_job_event)
    pool.job_finished.connect(metrics.on_job_finished)
    try:
        metrics.serve(port)
    except OSError as error:
        raise KnownError(
            f"Port {port} on 127.0.0.1 is not free ({error.strerror}); choose another "
            "--metrics-port."
        ) from None
    print(f"Metrics on http://127.0.0.1:{port}/metrics", flush=True)
    return metrics


def _quit_on_signals(app: QCoreApplication) -> list[int]:
    """SIGINT or SIGTERM quits the event loop; returns the list the signal numbers land in."""
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(number)
        app.quit()

    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), on_signal)
    # Python runs its signal handlers between bytecodes: a timer keeps the interpreter stepping.
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(_SIGNAL_WAKE_MS)
    return received
