"""money-path fixes: each period's base, the current subscription's start, and the discount
a credit was put on before it is attached

Revision ID: 0007_money
Revises: 0008_throttle
Create Date: 2026-11-29 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orzbob.kit.db

revision = "0007_money"
down_revision = "0008_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quota_periods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_base_cents", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "polar_subscription_started_at",
                orzbob.kit.db.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("polar_discount_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_column("polar_discount_id")
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.drop_column("polar_subscription_started_at")
    with op.batch_alter_table("quota_periods", schema=None) as batch_op:
        batch_op.drop_column("monthly_base_cents")
