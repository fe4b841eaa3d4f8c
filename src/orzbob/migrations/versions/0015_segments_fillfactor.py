"""metering: leave room on usage segment pages so the checkpoint's counter updates are HOT

Revision ID: 0015_segments_ff
Revises: 0014_perf_meter
Create Date: 2026-11-29 13:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0015_segments_ff"
down_revision = "0014_perf_meter"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every checkpoint pass rewrites each open segment's counters (emitted_minutes,
    # counted_until), which no index covers. With room left on the page PostgreSQL keeps the
    # new row version there (a heap-only tuple) and touches none of the table's five indexes;
    # on a full page each update writes a new entry in every one of them. New pages get the
    # room at once; existing ones as they are rewritten (VACUUM FULL, or the rows moving).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_segments SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_segments RESET (fillfactor)")
