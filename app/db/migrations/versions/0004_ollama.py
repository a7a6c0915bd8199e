"""Publications to Ollama and evaluations of published jobs.

Revision ID: 0004_ollama
Revises: 0003_queue_order
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_ollama"
down_revision: str | None = "0003_queue_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _job_column() -> sa.Column[str]:
    return sa.Column(
        "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _job_column(),
        sa.Column("ollama_model", sa.String(300), nullable=False),
        sa.Column("ollama_url", sa.String(500), nullable=False),
        sa.Column("ollama_base", sa.String(300), nullable=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("quantize", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_publications_job", "publications", ["job_id", "created_at"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _job_column(),
        sa.Column("tuned_model", sa.String(300), nullable=False),
        sa.Column("base_model", sa.String(300), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("details_file", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_evaluations_job", "evaluations", ["job_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_job", table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_index("ix_publications_job", table_name="publications")
    op.drop_table("publications")
