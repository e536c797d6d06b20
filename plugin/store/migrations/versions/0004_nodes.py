"""Several servers on one store: the ``nodes`` they register, and who owns each job and deployment.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``nodes``; add ``owner`` to ``jobs`` and ``deployments``; seed the ``jobs`` counter."""
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("url", sa.String(1024), nullable=True),
        sa.Column("incarnation", sa.String(32), nullable=False),
        sa.Column("beat", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.create_index("ix_jobs_owner", ["owner"])
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
    # Claiming a queued job locks this row first, so servers claim one at a time (see tiffin.store.cluster).
    counters = sa.table("counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger))
    op.bulk_insert(counters, [{"name": "jobs", "value": 0}])


def downgrade() -> None:
    """Drop ``nodes`` and the ``owner`` columns."""
    op.execute("DELETE FROM counters WHERE name = 'jobs'")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_owner")
        batch.drop_column("owner")
    op.drop_table("nodes")
