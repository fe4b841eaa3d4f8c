"""metering: open segments indexed by org, then id, for the checkpoint's batches

Revision ID: 0017_open_by_org
Revises: 0016_records_fk
Create Date: 2026-11-29 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_open_by_org"
down_revision = "0016_records_fk"
branch_labels = None
depends_on = None

_OPEN = sa.text("ended_at IS NULL")


def upgrade() -> None:
    # The checkpoint takes open segments in (org, id) order, so an org's segments fall in
    # one batch (two at a boundary) and its periods, rollups and alerts are read and written
    # once a pass; by id alone an org's instances, started at different times, were spread
    # over as many batches as it has instances. This index also serves what the one on
    # org_id alone did (an org's open segments, now already in id order).
    op.create_index(
        "ix_usage_segments_open_org_id",
        "usage_segments",
        ["org_id", "id"],
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )
    op.drop_index("ix_usage_segments_open_org", table_name="usage_segments")


def downgrade() -> None:
    op.create_index(
        "ix_usage_segments_open_org",
        "usage_segments",
        ["org_id"],
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )
    op.drop_index("ix_usage_segments_open_org_id", table_name="usage_segments")
