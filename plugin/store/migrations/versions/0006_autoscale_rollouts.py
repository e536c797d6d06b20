"""Autoscale settings (``tiffin monitor autoscale``) and guarded rollouts (``tiffin online-endpoint rollout``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``autoscale_settings`` (one per name, targeting one deployment) and ``rollouts`` (one per endpoint)."""
    op.create_table(
        "autoscale_settings",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("deployment_name", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_autoscale_settings"),
    )
    op.create_table(
        "rollouts",
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_name", name="pk_rollouts"),
    )


def downgrade() -> None:
    """Drop ``rollouts`` and ``autoscale_settings``."""
    op.drop_table("rollouts")
    op.drop_table("autoscale_settings")
