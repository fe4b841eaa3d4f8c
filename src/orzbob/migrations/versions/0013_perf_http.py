"""perf: open usage segments by org, for the billing read and the cap checks

Revision ID: 0013_perf_http
Revises: 0011_reconcile
Create Date: 2026-11-29 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_perf_http"
down_revision = "0011_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GET /v1/billing and every cap check read an org's open segments; without this they
    # scanned every open segment of every org.
    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_segments_org_open",
            ["org_id"],
            unique=False,
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_segments_org_open")
