"""The queue's order: a position per queued job, so that the user can reorder the queue.

Revision ID: 0003_queue_order
Revises: 0002_jobs
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_queue_order"
down_revision: str | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue_position", sa.Float(), nullable=True))
    # Jobs queued before this revision keep their order: oldest first.
    op.execute(
        "UPDATE jobs SET queue_position = (SELECT COUNT(*) FROM jobs AS older "
        "WHERE older.created_at < jobs.created_at "
        "OR (older.created_at = jobs.created_at AND older.id <= jobs.id))"
    )
    op.create_index("ix_jobs_status_position", "jobs", ["status", "queue_position"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_position", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue_position")
