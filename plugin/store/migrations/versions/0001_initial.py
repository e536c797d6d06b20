"""Initial schema: endpoints, deployments and the counters table.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``counters`` (seeded with ``routing = 0``), ``endpoints`` and ``deployments``."""
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )
    op.bulk_insert(counters, [{"name": "routing", "value": 0}])

    op.create_table(
        "endpoints",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=False),
        sa.Column("mirror_traffic", sa.JSON(), nullable=False),
        sa.Column("auth_mode", sa.String(32), nullable=False),
        sa.Column("primary_key", sa.String(255), nullable=True),
        sa.Column("secondary_key", sa.String(255), nullable=True),
        sa.Column("token_secret", sa.String(255), nullable=True),
        sa.Column("provisioning_state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('online', 'batch')", name="ck_endpoints_kind"),
        sa.PrimaryKeyConstraint("name", name="pk_endpoints"),
    )

    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('online', 'batch')", name="ck_deployments_kind"),
        sa.ForeignKeyConstraint(
            ["endpoint_name"],
            ["endpoints.name"],
            name="fk_deployments_endpoint_name_endpoints",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("endpoint_name", "name", name="uq_deployments_endpoint_name_name"),
    )


def downgrade() -> None:
    """Drop everything 0001 created."""
    op.drop_table("deployments")
    op.drop_table("endpoints")
    op.drop_table("counters")
