"""Add mini-batches (the durable progress of batch jobs) and the deployment spec a job runs with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``mini_batches``; add ``jobs.spec``."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=True))
    op.create_table(
        "mini_batches",
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("failed_items", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_name"], ["jobs.name"], name="fk_mini_batches_job_name_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_name", "index", name="pk_mini_batches"),
        sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name="ck_mini_batches_status"),
    )


def downgrade() -> None:
    """Drop ``mini_batches`` and ``jobs.spec``."""
    op.drop_table("mini_batches")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spec")
