"""From a slot freeing to the next job's subprocess starting, with one worker and 20 jobs.

The trainer here is a stand-in that only stamps the time it starts and the time it ends (it is
the pool's latency that is measured, not training); latency = next start - previous end.
"""

import json
import sys
import tempfile
import textwrap
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset
from app.jobs.service import NewJob, create_job
from app.workers.pool import WorkerPool
from bench.common import median, peak_rss_mb

JOBS = 20

with tempfile.TemporaryDirectory() as folder:
    root = Path(folder)
    stamps = root / "stamps.log"
    trainer = root / "trainer.py"
    trainer.write_text(
        textwrap.dedent(f"""
        import time, json, sys
        start = time.time()
        sys.stdout.write(json.dumps({{"event": "finished", "status": "completed"}}) + "\\n")
        sys.stdout.flush()
        with open({str(stamps)!r}, "a") as log:
            log.write(f"{{start}} {{time.time()}}\\n")
    """)
    )
    app = QCoreApplication(sys.argv[:1])
    context = AppContext.open(root / "home")
    data = root / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    dataset = import_dataset(context.database, context.home, data, ImportOptions())
    settings = context.settings.load()
    for _ in range(JOBS):
        create_job(context.database, context.home, settings, NewJob(dataset.id, "some/model"))
    # -S skips site imports: the stand-in's own start-up is a few milliseconds.
    pool = WorkerPool(
        context.database,
        context.home,
        1,
        command=lambda job: [sys.executable, "-S", str(trainer), str(job)],
    )
    pool.idle.connect(app.quit)
    QTimer.singleShot(0, pool.start)
    app.exec()
    pool.shutdown()
    context.close()
    pairs = [tuple(map(float, line.split())) for line in stamps.read_text().splitlines()]
    gaps = [pairs[i + 1][0] - pairs[i][1] for i in range(len(pairs) - 1)]
    print(
        json.dumps(
            {
                "median_ms": median(gaps) * 1000,
                "max_ms": max(gaps) * 1000,
                "jobs": len(pairs),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
