"""polar reconcile: kept reconciliation runs

Revision ID: 0011_reconcile
Revises: 0009_alerts
Create Date: 2026-11-29 01:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orzbob.kit.db

revision = "0011_reconcile"
down_revision = "0009_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "polar_reconcile_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("period", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("window_start", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("window_end", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", orzbob.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("drift_minutes", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_polar_reconcile_runs_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polar_reconcile_runs")),
    )
    with op.batch_alter_table("polar_reconcile_runs", schema=None) as batch_op:
        batch_op.create_index("ix_polar_reconcile_runs_finished", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_polar_reconcile_runs_scope_org_period",
            ["scope", "org_id", "window_start"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("polar_reconcile_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_polar_reconcile_runs_scope_org_period")
        batch_op.drop_index("ix_polar_reconcile_runs_finished")
    op.drop_table("polar_reconcile_runs")
