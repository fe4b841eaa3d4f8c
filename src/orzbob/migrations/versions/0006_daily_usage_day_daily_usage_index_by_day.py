"""daily usage index by day

Revision ID: 0006_daily_usage_day
Revises: 0005_polar_subscriptions
Create Date: 2026-11-25 16:59:17.313688
"""

from __future__ import annotations

from alembic import op

revision = "0006_daily_usage_day"
down_revision = "0005_polar_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daily_usage", schema=None) as batch_op:
        batch_op.create_index("ix_daily_usage_day", ["day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("daily_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_daily_usage_day")
