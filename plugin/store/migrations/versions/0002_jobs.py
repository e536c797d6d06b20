"""Add the jobs table (batch-scoring jobs).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``jobs``, indexed for listing by endpoint and by status."""
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("deployment_name", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_jobs"),
    )
    op.create_index("ix_jobs_endpoint_name", "jobs", ["endpoint_name"])
    op.create_index("ix_jobs_status", "jobs", ["status"])


def downgrade() -> None:
    """Drop ``jobs``."""
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_index("ix_jobs_endpoint_name", table_name="jobs")
    op.drop_table("jobs")
