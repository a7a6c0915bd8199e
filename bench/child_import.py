"""The importer on the same file: parse, normalise, statistics and writing together."""

import json
import sys
import time
from pathlib import Path

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset
from bench.common import peak_rss_mb

path, home = Path(sys.argv[1]), sys.argv[2]
context = AppContext.open(home)
start = time.perf_counter()
dataset = import_dataset(
    context.database, context.home, path, ImportOptions(name=sys.argv[3], size_limit_bytes=None)
)
seconds = time.perf_counter() - start
context.close()
report = {"seconds": seconds, "rows": dataset.rows, "id": dataset.id, "peak_rss_mb": peak_rss_mb()}
print(json.dumps(report))
