"""The Jobs tab with 10,000 jobs in the database: open it (read, fill, paint) and filter it."""

import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from app.context import AppContext
from app.db.models import Job
from app.workers.background import TaskRunner
from app.workers.pool import WorkerPool
from bench.common import median, peak_rss_mb
from ui.jobs_tab import JobsTab

JOBS = 10_000
STATUSES = ("completed", "failed", "cancelled", "interrupted", "queued")


def fill(context: AppContext) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        Job(
            id=f"{number:012x}",
            name=f"run {number} {'alpha' if number % 7 else 'beta'}",
            dataset_id=None,
            dataset_name="bench",
            base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
            method="lora",
            spec={},
            status=STATUSES[number % len(STATUSES)],
            attempt=1,
            step=number % 200,
            total_steps=200,
            loss=1.0 + (number % 50) / 100,
            artifacts={},
            summary={},
            created_at=start + timedelta(minutes=number),
        )
        for number in range(JOBS)
    ]
    with context.database.session() as session:
        session.add_all(rows)


def open_tab(
    app: QApplication, context: AppContext, runner: TaskRunner, pool: WorkerPool
) -> tuple[JobsTab, float]:
    started = time.perf_counter()
    tab = JobsTab(context, runner, pool)
    tab.resize(1200, 700)
    tab.show()
    while not tab.loaded:  # wait as the app's event loop does, without spinning against the read
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    tab.grab()
    return tab, time.perf_counter() - started


with tempfile.TemporaryDirectory() as folder:
    app = QApplication(sys.argv[:1])
    context = AppContext.open(Path(folder))
    fill(context)
    runner = TaskRunner()
    pool = WorkerPool(context.database, context.home, 1)
    opens, filters = [], []
    for _ in range(5):
        tab, seconds = open_tab(app, context, runner, pool)
        opens.append(seconds)
        for text in ("beta", "run 99", ""):
            started = time.perf_counter()
            tab.proxy.set_search(text)
            tab.grab()
            filters.append(time.perf_counter() - started)
        tab.close()
        tab.deleteLater()
        app.processEvents()
    runner.shutdown()
    pool.shutdown()
    context.close()
    print(
        json.dumps(
            {
                "open_median_s": median(opens),
                "filter_median_s": median(filters),
                "filter_max_s": max(filters),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
