"""polar subscriptions: scheduled plan changes (a canceled subscription ends at period end)

Revision ID: 0005_polar_subscriptions
Revises: 0004_merge
Create Date: 2026-11-25 16:23:48.548335
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orzbob.kit.db

revision = "0005_polar_subscriptions"
down_revision = "0004_merge"
branch_labels = None
depends_on = None

PENDING = "applied_at IS NULL AND canceled_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "polar_scheduled_plan_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("effective_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_polar_scheduled_plan_changes_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polar_scheduled_plan_changes")),
    )
    with op.batch_alter_table("polar_scheduled_plan_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_polar_scheduled_plan_changes_pending_due",
            ["effective_at"],
            unique=False,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )
        batch_op.create_index(
            "uq_polar_scheduled_plan_changes_pending_org",
            ["org_id"],
            unique=True,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )


def downgrade() -> None:
    with op.batch_alter_table("polar_scheduled_plan_changes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_polar_scheduled_plan_changes_pending_org",
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )
        batch_op.drop_index(
            "ix_polar_scheduled_plan_changes_pending_due",
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )
    op.drop_table("polar_scheduled_plan_changes")
