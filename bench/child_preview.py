"""Opening a dataset's preview in the Datasets tab: select it, fill the first page, paint."""

import json
import sys
import time

from PySide6.QtWidgets import QApplication

from app.context import AppContext
from app.workers.background import TaskRunner
from bench.common import median, peak_rss_mb
from ui.datasets_tab import DatasetsTab

home, dataset_id = sys.argv[1], sys.argv[2]
app = QApplication([])
context = AppContext.open(home)
runner = TaskRunner()
tab = DatasetsTab(context, runner)
tab.resize(1100, 700)
tab.show()
app.processEvents()
row = tab.model.row_of(dataset_id)
timings = []
for _ in range(7):
    tab.table.clearSelection()
    app.processEvents()
    start = time.perf_counter()
    tab.table.selectRow(row)
    tab.grab()  # paints the table, the statistics and the first page of the preview
    timings.append(time.perf_counter() - start)
    assert tab.preview_model.rowCount() > 0
runner.shutdown()
context.close()
report = {"median_seconds": median(timings), "runs": timings, "peak_rss_mb": peak_rss_mb()}
print(json.dumps(report))
