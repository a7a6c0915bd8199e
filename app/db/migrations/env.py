"""Alembic environment: runs the revisions against the database file named in the config."""

from alembic import context
from sqlalchemy import create_engine

from app.db.models import Base

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    # render_as_batch lets revisions alter SQLite tables (copy-and-move) when they must.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
