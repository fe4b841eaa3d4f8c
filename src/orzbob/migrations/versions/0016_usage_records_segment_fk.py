"""metering: one foreign key from a usage record to its segment, its org and instance included
(NOT VALID on PostgreSQL: validate it after the deploy, see `upgrade`)

Revision ID: 0016_records_fk
Revises: 0015_segments_ff
Create Date: 2026-11-29 13:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0016_records_fk"
down_revision = "0015_segments_ff"
branch_labels = None
depends_on = None

_SEGMENT_KEY = "uq_usage_segments_id_org_instance"
_FK = "fk_usage_records_segment_id_usage_segments"
_OLD = (
    ("fk_usage_records_org_id_orgs", "orgs", ["org_id"], ["id"]),
    ("fk_usage_records_instance_id_instances", "instances", ["instance_id"], ["id"]),
    (_FK, "usage_segments", ["segment_id"], ["id"]),
)


def upgrade() -> None:
    # A record's (segment, org, instance) must be its segment's: one check per record
    # instead of three (org, instance, segment), on a row the writer already holds locked,
    # and stronger than before (the three could each exist yet disagree). The org and the
    # instance stay referenced through the segment's own foreign keys.
    op.create_index(_SEGMENT_KEY, "usage_segments", ["id", "org_id", "instance_id"], unique=True)
    columns = ["segment_id", "org_id", "instance_id"]
    parents = ["id", "org_id", "instance_id"]
    if op.get_bind().dialect.name == "postgresql":
        for name, _, _, _ in _OLD:
            op.drop_constraint(name, "usage_records", type_="foreignkey")
        # Added NOT VALID: every new or changed record is checked at once, and the scan of
        # the existing ones (written from their segment, so they agree) is left out of the
        # migration's transaction, whose locks would block usage writes for its whole length
        # on a large table. Run `ALTER TABLE usage_records VALIDATE CONSTRAINT
        # fk_usage_records_segment_id_usage_segments` afterwards: it blocks no writer.
        op.create_foreign_key(
            _FK, "usage_records", "usage_segments", columns, parents, postgresql_not_valid=True
        )
        return
    with op.batch_alter_table("usage_records") as batch:
        for name, _, _, _ in _OLD:
            batch.drop_constraint(name, type_="foreignkey")
        batch.create_foreign_key(_FK, "usage_segments", columns, parents)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_FK, "usage_records", type_="foreignkey")
        for name, table, local, remote in _OLD:
            op.create_foreign_key(name, "usage_records", table, local, remote)
    else:
        with op.batch_alter_table("usage_records") as batch:
            batch.drop_constraint(_FK, type_="foreignkey")
            for name, table, local, remote in _OLD:
                batch.create_foreign_key(name, table, local, remote)
    op.drop_index(_SEGMENT_KEY, table_name="usage_segments")
