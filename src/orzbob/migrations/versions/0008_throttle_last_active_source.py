"""throttle: what kept an instance awake, and an index for the idle sweep

Revision ID: 0008_throttle
Revises: 0006_daily_usage_day
Create Date: 2026-11-29 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_throttle"
down_revision = "0006_daily_usage_day"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_active_source", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("last_active_source")
