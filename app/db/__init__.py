"""Persistence: SQLAlchemy 2.0 models, the engine (SQLite in WAL mode) and Alembic migrations."""

from app.db.session import Database, open_database

__all__ = ["Database", "open_database"]
