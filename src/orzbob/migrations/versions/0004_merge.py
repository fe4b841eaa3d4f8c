"""merge the polar and quota branches

Revision ID: 0004_merge
Revises: 0003_polar, 0003_quota
"""

from __future__ import annotations

revision = "0004_merge"
down_revision = ("0003_polar", "0003_quota")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
