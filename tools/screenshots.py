"""Renders the README's screenshots offscreen from a throwaway data folder with the real datasets.

Run from the repository root: QT_QPA_PLATFORM=offscreen .venv/bin/python -m tools.screenshots
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from app.context import AppContext
from app.datasets.importer import ImportOptions, import_dataset

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "real"
OUT = ROOT / "docs" / "screenshots"


def settle(app: QApplication, ms: int = 400) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> int:
    app = QApplication(sys.argv)
    from ui.main_window import MainWindow

    with tempfile.TemporaryDirectory() as folder:
        context = AppContext.open(folder)
        for name in ("alpaca_en_demo.json", "glaive_toolcall_en_demo.json", "c4_demo.jsonl"):
            import_dataset(context.database, context.home, REAL / name, ImportOptions())
        window = MainWindow(context)
        window.resize(1280, 800)
        window.show()
        settle(app)
        OUT.mkdir(parents=True, exist_ok=True)
        window.tabs.setCurrentWidget(window.dashboard_tab)
        settle(app)
        window.grab().save(str(OUT / "dashboard.png"))
        tab = window.datasets_tab
        window.tabs.setCurrentWidget(tab)
        tab.table.selectRow(
            tab.model.row_of(next(d.id for d in tab.model._datasets if d.format == "sharegpt"))
        )
        tab.preview_table.selectRow(0)
        settle(app)
        window.grab().save(str(OUT / "datasets.png"))
        csv = Path(folder) / "support_tickets.csv"
        csv.write_text(
            "question,answer,category\n"
            "How do I reset my password?,Open Settings and choose Reset password.,account\n"
            'Can I export my data?,"Yes: File, then Export, as CSV or JSON.",data\n'
            "Where are invoices?,Invoices are under Billing.,billing\n",
            encoding="utf-8",
        )
        tab.import_files([csv])
        settle(app, 1500)
        dialog = tab._dialog
        assert dialog is not None
        dialog.grab().save(str(OUT / "import.png"))
        dialog.reject()
        window.tabs.setCurrentWidget(window.settings_tab)
        window.settings_tab.editors["max_concurrent_jobs"].setText("0")
        window.settings_tab.editors["ollama_url"].setText("localhost:11434")
        window.settings_tab.save_button.click()
        settle(app)
        window.grab().save(str(OUT / "settings.png"))
        window.shut_down()
        context.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
