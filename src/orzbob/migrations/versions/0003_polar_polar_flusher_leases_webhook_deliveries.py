"""polar: flusher leases, webhook deliveries

Revision ID: 0003_polar
Revises: 0002
Create Date: 2026-11-25 16:15:10.351634
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orzbob.kit.db

revision = "0003_polar"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "polar_webhook_deliveries",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("received_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polar_webhook_deliveries")),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("claim_expires_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("claim_expires_at")
        batch_op.drop_column("claimed_by")

    op.drop_table("polar_webhook_deliveries")
