"""Opening the data folder, its logs and its database: shared by the window and the CLI."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from app.db.session import Database, open_database
from app.logs import close_logging, configure_logging
from app.paths import DataHome, resolve_data_home
from app.settings import SettingsStore

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """The data folder, its database and settings, opened once per process."""

    home: DataHome
    database: Database
    settings: SettingsStore

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None) -> AppContext:
        """Create the data folder if needed, start logging there, and migrate the database."""
        data_home = resolve_data_home(home).ensure()
        configure_logging(data_home.logs)
        database = open_database(data_home.database, data_home.backups)
        _clean_up_after_crashes(data_home)
        log.info("opened data folder", extra={"home": str(data_home.root)})
        return cls(data_home, database, SettingsStore(database))

    def close(self) -> None:
        self.database.close()
        close_logging()


def _clean_up_after_crashes(home: DataHome) -> None:
    """Remove half-written imports that a killed process left behind."""
    from app.datasets.repository import cleanup_staging

    removed = cleanup_staging(home)
    if removed:
        log.info("removed unfinished imports", extra={"count": removed})
