"""The data folder, the database and its migrations, settings, and the logs."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat

import pytest
from sqlalchemy import text

from app.context import AppContext
from app.db import open_database
from app.db.migrate import HEAD_REVISION, alembic_head, current_revision
from app.errors import DatabaseTooNewError
from app.paths import DataHome, resolve_data_home
from app.settings import AppSettings, SettingsStore, validate_settings


def test_data_folder_is_private_to_its_user(tmp_path):
    home = DataHome(tmp_path / "home").ensure()
    for folder in (home.root, home.datasets, home.jobs, home.logs):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_data_folder_comes_from_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTM_HOME", str(tmp_path / "from-env"))
    assert resolve_data_home().root == tmp_path / "from-env"
    assert resolve_data_home(tmp_path / "explicit").root == tmp_path / "explicit"


def test_default_data_folder_is_per_user(monkeypatch):
    monkeypatch.delenv("MTM_HOME", raising=False)
    root = resolve_data_home().root
    assert "model-training-manager" in str(root)


def test_database_uses_wal_foreign_keys_and_busy_timeout(database):
    with database.session() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_head_constant_matches_alembic():
    assert alembic_head() == HEAD_REVISION


def test_migration_creates_tables_and_stamps_head(database):
    assert current_revision(database.path) == HEAD_REVISION
    with database.session() as session:
        tables = set(
            session.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()
        )
    assert {"datasets", "settings", "alembic_version"} <= tables


def test_empty_file_is_migrated_to_head(home):
    home.database.touch()
    open_database(home.database, home.backups).close()
    assert current_revision(home.database) == HEAD_REVISION
    assert not list(home.backups.iterdir())  # nothing to lose, nothing backed up


def test_backup_is_taken_when_schema_changes(home, monkeypatch):
    import app.db.migrate as migrate

    open_database(home.database, home.backups).close()
    # Pretend this build knows a newer head, so the stamped file counts as old.
    monkeypatch.setattr(migrate, "HEAD_REVISION", "9999_future")
    monkeypatch.setattr(migrate, "_upgrade", lambda path: None)
    migrate.migrate_to_head(home.database, home.backups)
    backups = list(home.backups.glob(f"mtm-{HEAD_REVISION}-*.sqlite3"))
    assert len(backups) == 1
    with sqlite3.connect(backups[0]) as connection:
        stamped = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        assert stamped == HEAD_REVISION
    connection.close()


def test_migrating_from_the_first_schema_keeps_the_data_and_backs_it_up(home):
    from alembic import command

    from app.db.migrate import _alembic_config

    config = _alembic_config(home.database)
    command.upgrade(config, "0001_datasets_settings")
    with sqlite3.connect(home.database) as connection:
        connection.execute("INSERT INTO settings VALUES ('max_concurrent_jobs', '2', '2026-01-01')")
    connection.close()
    database = open_database(home.database, home.backups)
    assert SettingsStore(database).load().max_concurrent_jobs == 2
    database.close()
    assert current_revision(home.database) == HEAD_REVISION
    assert len(list(home.backups.glob("mtm-0001_datasets_settings-*.sqlite3"))) == 1


def test_database_from_newer_version_is_refused_with_a_sentence(home):
    open_database(home.database, home.backups).close()
    with sqlite3.connect(home.database) as connection:
        connection.execute("UPDATE alembic_version SET version_num='0042_from_the_future'")
    connection.close()
    with pytest.raises(DatabaseTooNewError) as raised:
        open_database(home.database, home.backups)
    assert "newer version" in raised.value.message
    assert str(home.database) in raised.value.message
    assert raised.value.message.count(". ") == 0 and raised.value.message.endswith(".")


def test_settings_survive_a_restart(home):
    context = AppContext.open(home.root)
    settings = context.settings.load()
    settings.ollama_url = "http://localhost:11500"
    settings.max_concurrent_jobs = 3
    settings.hyperparameters.epochs = 7
    context.settings.save(settings)
    context.close()
    reopened = AppContext.open(home.root)
    loaded = reopened.settings.load()
    reopened.close()
    assert loaded.ollama_url == "http://localhost:11500"
    assert loaded.max_concurrent_jobs == 3
    assert loaded.hyperparameters.epochs == 7


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("ollama_url", "localhost:11434", "Enter a URL"),
        ("ollama_url", "http://host:99999", "port"),
        ("max_concurrent_jobs", 0, "at least 1"),
        ("max_concurrent_jobs", "two", "whole number"),
        ("import_size_limit_mb", -5, "at least 1"),
        ("hyperparameters.learning_rate", 0, "more than 0"),
        ("hyperparameters.lora_alpha", 1.5, "whole number"),
        ("hyperparameters.method", "dpo", "Choose one of"),
    ],
)
def test_invalid_settings_get_a_message_for_their_field(field, value, expected):
    data = AppSettings().model_dump(mode="json")
    target = data
    *parents, last = field.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    settings, errors = validate_settings(data)
    assert settings is None
    assert list(errors) == [field]
    assert expected in errors[field]
    assert errors[field].endswith(".")


def test_stored_setting_that_no_longer_validates_falls_back_to_default(database):
    from app.db.models import Setting

    with database.session() as session:
        session.add(Setting(key="max_concurrent_jobs", value="-3"))
        session.add(Setting(key="ollama_url", value=json.dumps("http://10.0.0.5:11434")))
    loaded = SettingsStore(database).load()
    assert loaded.max_concurrent_jobs == AppSettings().max_concurrent_jobs
    assert loaded.ollama_url == "http://10.0.0.5:11434"


def test_logs_are_json_lines_in_the_data_folder(home):
    context = AppContext.open(home.root)
    logging.getLogger("app.test").info("hello", extra={"dataset": "abc"})
    context.close()
    lines = (home.logs / "mtm.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    hello = next(r for r in records if r["message"] == "hello")
    assert hello["level"] == "info" and hello["dataset"] == "abc" and "time" in hello


def test_upgrading_keeps_the_queue_oldest_first(home):
    """Jobs queued under revision 0002 get queue positions in their creation order."""
    from alembic import command

    from app.db.migrate import _alembic_config

    command.upgrade(_alembic_config(home.database), "0002_jobs")
    with sqlite3.connect(home.database) as connection:
        for job_id, created in (("late", "2026-01-02 00:00:00"), ("early", "2026-01-01 00:00:00")):
            connection.execute(
                "INSERT INTO jobs (id, name, dataset_name, base_model, method, spec, status, "
                "attempt, step, total_steps, artifacts, summary, created_at) "
                "VALUES (?, ?, 'd', 'm', 'lora', '{}', 'queued', 1, 0, 0, '{}', '{}', ?)",
                (job_id, job_id, created),
            )
    database = open_database(home.database, home.backups)
    try:
        from app.jobs.service import queued_in_order

        assert [job.id for job in queued_in_order(database)] == ["early", "late"]
    finally:
        database.close()
