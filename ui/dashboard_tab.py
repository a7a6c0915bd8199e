"""The Dashboard tab: what is in the data folder now, and what to do next."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.context import AppContext
from app.datasets.repository import list_datasets


class DashboardTab(QWidget):
    """Facts read from the database, refreshed when datasets change; nothing is estimated."""

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        layout = QVBoxLayout(self)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.summary_label)
        layout.addStretch(1)
        self.refresh()

    def refresh(self) -> None:
        datasets = list_datasets(self._context.database)
        records = sum(d.rows for d in datasets)
        if datasets:
            newest = datasets[0]
            data_line = (
                f"<p><b>{len(datasets):,}</b> datasets with <b>{records:,}</b> records in all; "
                f"the newest is <i>{_escape(newest.name)}</i> ({newest.rows:,} {newest.format} "
                "records).</p>"
            )
        else:
            data_line = (
                "<p>No datasets yet. Press <b>Ctrl+O</b> or drop a JSON, JSON Lines, CSV, "
                "Parquet or text file on the window to import one.</p>"
            )
        self.summary_label.setText(
            "<h2>Model Training Manager</h2>"
            f"{data_line}"
            "<p>Training jobs are not built yet: this dashboard will show running and recent "
            "fine-tuning jobs once the training engine lands.</p>"
            f"<p>Data folder: <code>{_escape(str(self._context.home.root))}</code></p>"
        )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
