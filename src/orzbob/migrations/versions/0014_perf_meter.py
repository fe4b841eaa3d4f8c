"""metering: partial indexes on open usage segments (the checkpoint and the limiters)

Revision ID: 0014_perf_meter
Revises: 0011_reconcile
Create Date: 2026-11-29 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_perf_meter"
down_revision = "0011_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only open segments are indexed: the checkpoint pages through them by id, and the cap
    # limiters read an org's open segments, without scanning closed history.
    op.create_index(
        "ix_usage_segments_open_id",
        "usage_segments",
        ["id"],
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_usage_segments_open_org",
        "usage_segments",
        ["org_id"],
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_usage_segments_open_org", table_name="usage_segments")
    op.drop_index("ix_usage_segments_open_id", table_name="usage_segments")
