"""Two jobs at once on this machine against one job alone, through the real pool.

SmolLM2-135M LoRA on identity.json, the same fixed steps each. Alone, the job has every core;
beside another, each has half (the pool divides the cores by the jobs running). Each job's
tokens per second is its trainer's own figure (training time, not start-up); two jobs' together
is their sum, as they run side by side from start to end.
"""

import json
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset
from app.jobs.service import NewJob, create_job, get_job
from app.workers.pool import WorkerPool
from bench.common import OUT, peak_rss_mb
from bench.train_support import REAL_DATA, smollm2_gguf

HYPER = {
    "method": "lora",
    "max_steps": 10,
    "batch_size": 4,
    "max_seq_length": 256,
    "learning_rate": 2e-4,
    "lora_r": 8,
    "lora_alpha": 16,
    "eval_fraction": 0.0,
    "save_steps": 1000,
    "warmup_ratio": 0.0,
}


def run(context: AppContext, dataset_id: str, count: int) -> list[float]:
    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])
    settings = context.settings.load()
    jobs = [
        create_job(
            context.database,
            context.home,
            settings,
            NewJob(dataset_id, str(smollm2_gguf()), hyperparameters=HYPER),
        )
        for _ in range(count)
    ]
    pool = WorkerPool(context.database, context.home, count)
    pool.idle.connect(app.quit)
    QTimer.singleShot(0, pool.start)
    app.exec()
    pool.shutdown()
    finished = [get_job(context.database, job.id) for job in jobs]
    for job in finished:
        if job.status != "completed":
            raise SystemExit(f"job {job.id} {job.status}: {job.error}")
    return [float(job.summary["tokens_per_second"]) for job in finished]


with tempfile.TemporaryDirectory() as folder:
    context = AppContext.open(Path(folder))
    cache = OUT / "models"  # the GGUF base is converted once and reused by every run
    cache.mkdir(parents=True, exist_ok=True)
    (context.home.root / "models").symlink_to(cache, target_is_directory=True)
    dataset = import_dataset(
        context.database, context.home, REAL_DATA / "identity.json", ImportOptions()
    )
    run(context, dataset.id, 1)  # converts the GGUF once, so neither measured run pays for it
    [alone] = run(context, dataset.id, 1)
    pair = run(context, dataset.id, 2)
    context.close()
    print(
        json.dumps(
            {
                "alone": alone,
                "pair": pair,
                "together": sum(pair),
                "ratio": sum(pair) / alone,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
