"""Schema migrations: Alembic revisions, run at start-up, with a backup of the file first.

Alembic itself is imported only when the schema must change, so an up-to-date database opens
without paying for it.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import DatabaseTooNewError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# The newest revision in migrations/versions; a test checks that it matches Alembic's head.
HEAD_REVISION = "0004_ollama"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def current_revision(path: Path) -> str | None:
    """The revision stamped in the database at `path`, or None for a new or unstamped file."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with sqlite3.connect(path) as connection:
        has_table = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        ).fetchone()
        if not has_table:
            return None
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    connection.close()
    return None if row is None else str(row[0])


def migrate_to_head(path: Path, backups_dir: Path) -> None:
    """Bring the database at `path` to HEAD_REVISION; refuse one written by a newer version."""
    revision = current_revision(path)
    if revision == HEAD_REVISION:
        return
    known = _known_revisions()
    if revision is not None and revision not in known:
        raise DatabaseTooNewError(
            f"The database {path} was written by a newer version of Model Training Manager "
            f"(schema {revision}); install that version again, or choose another data folder "
            "with --home."
        )
    if revision is not None:
        backup = backup_database(path, backups_dir, revision)
        log.info("backed up the database before migrating", extra={"backup": str(backup)})
    _upgrade(path)


def backup_database(path: Path, backups_dir: Path, revision: str) -> Path:
    """Copy the database consistently (SQLite's online backup) into `backups_dir`."""
    backups_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = backups_dir / f"mtm-{revision}-{stamp}.sqlite3"
    source = sqlite3.connect(path)
    destination = sqlite3.connect(target)
    try:
        source.backup(destination)
    finally:
        destination.close()
        source.close()
    return target


def _alembic_config(path: Path) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    return config


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(Path("unused")))
    return {rev.revision for rev in script.walk_revisions()}


def alembic_head() -> str | None:
    """The head revision as Alembic sees it (for the consistency test)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(Path("unused")))
    return script.get_current_head()


def _upgrade(path: Path) -> None:
    from alembic import command

    path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(path), "head")
