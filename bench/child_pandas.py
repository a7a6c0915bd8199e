"""Baseline: pandas.read_json(path, lines=True) alone on the same file."""

import json
import sys
import time

from bench.common import peak_rss_mb

path = sys.argv[1]
start = time.perf_counter()
import pandas as pd  # noqa: E402  (its import time is part of the baseline, as for the importer)

frame = pd.read_json(path, lines=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": len(frame), "peak_rss_mb": peak_rss_mb()}))
