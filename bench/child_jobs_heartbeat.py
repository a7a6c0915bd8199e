"""The GUI event loop while two real training jobs stream progress into the window.

Two tiny-model LoRA jobs run through the window's own pool (two workers); a 5 ms QTimer
heartbeat records the longest gap between its ticks from the first job starting to the last
finishing.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset
from app.jobs.service import NewJob, create_job
from bench.common import peak_rss_mb
from tests.training_fixtures import FACTS, build_tiny_model
from ui.async_tasks import install_event_loop, remove_event_loop
from ui.main_window import MainWindow

HYPER = {
    "max_seq_length": 64,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "epochs": 60,
    "save_steps": 1000,
    "eval_fraction": 0.0,
}

with tempfile.TemporaryDirectory() as folder:
    root = Path(folder)
    model = build_tiny_model(root / "tiny")
    app = QApplication(sys.argv[:1])
    context = AppContext.open(root / "home")
    settings = context.settings.load()
    settings.max_concurrent_jobs = 2
    context.settings.save(settings)
    data = root / "facts.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS * 4)
    )
    dataset = import_dataset(context.database, context.home, data, ImportOptions())
    jobs = [
        create_job(
            context.database,
            context.home,
            context.settings.load(),
            NewJob(dataset.id, str(model), hyperparameters=HYPER),
        )
        for _ in range(2)
    ]
    loop = install_event_loop(app)  # as ui.application.run_gui does
    window = MainWindow(context)
    window.show()
    gaps: list[float] = []
    last = [time.perf_counter()]
    streaming = {"started": 0, "finished": 0, "events": 0}

    def beat() -> None:
        now = time.perf_counter()
        if streaming["started"] and streaming["finished"] < len(jobs):
            gaps.append(now - last[0])
        last[0] = now

    def on_finished(_job: str, _status: str) -> None:
        streaming["finished"] += 1
        if streaming["finished"] == len(jobs):
            app.quit()

    window.pool.job_started.connect(lambda _job: streaming.__setitem__("started", 1))
    window.pool.job_event.connect(
        lambda *_: streaming.__setitem__("events", streaming["events"] + 1)
    )
    window.pool.job_finished.connect(on_finished)
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(beat)
    timer.start()
    QTimer.singleShot(600_000, app.quit)
    app.exec()
    timer.stop()
    window.shut_down()
    remove_event_loop(loop, *window.closing_work())
    context.close()
    ordered = sorted(gaps)
    print(
        json.dumps(
            {
                "max_gap_ms": ordered[-1] * 1000,
                "p99_gap_ms": ordered[int(len(ordered) * 0.99)] * 1000,
                "events": streaming["events"],
                "finished": streaming["finished"],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
