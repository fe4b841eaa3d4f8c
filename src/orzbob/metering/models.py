from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class RecordState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class SegmentFacts(Protocol):
    """What the caps read of an open usage segment: a `UsageSegment`, or a plain row."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def tier(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def counted_until(self) -> datetime: ...
    @property
    def emitted_minutes(self) -> int: ...


class UsageSegment(Base):
    """One uninterrupted stretch of `running`. At most one is open per instance."""

    __tablename__ = "usage_segments"
    __table_args__ = (
        Index(
            "uq_usage_segments_one_open_per_instance",
            "instance_id",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
        Index("ix_usage_segments_instance_started", "instance_id", "started_at"),
        # Open segments only: by id (is anything open?), and by org then id: the checkpoint
        # pages through them an org at a time, the limiters read an org's (migration 0017).
        Index(
            "ix_usage_segments_open_id",
            "id",
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
        Index(
            "ix_usage_segments_open_org_id",
            "org_id",
            "id",
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
        # A usage record's foreign key: its segment, org and instance together.
        Index("uq_usage_segments_id_org_instance", "id", "org_id", "instance_id", unique=True),
        # Half of each page left free: the checkpoint's counter updates (no index covers
        # those columns) stay heap-only, writing no index entries (migration 0015).
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id"))
    tier: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # Minutes already turned into usage records, and up to when.
    emitted_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    counted_until: Mapped[datetime]


class UsageRecord(Base):
    """An emitted amount of usage: the transactional outbox shipped to Polar.

    `minutes = included_minutes + overage_minutes`; `billable_minutes` is the overage a plan
    bills (zero on a hard-stop plan). `small_minutes` is the allowance consumed, weighted.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index(
            "ix_usage_records_pending",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_usage_records_org_end", "org_id", "interval_end"),
        Index("ix_usage_records_instance", "instance_id"),
        # One check per record, on the segment row the writer holds (migration 0016); the
        # org and instance are referenced through the segment's own keys.
        ForeignKeyConstraint(
            ["segment_id", "org_id", "instance_id"],
            ["usage_segments.id", "usage_segments.org_id", "usage_segments.instance_id"],
            name="fk_usage_records_segment_id_usage_segments",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID]
    instance_id: Mapped[uuid.UUID]
    segment_id: Mapped[uuid.UUID]
    tier: Mapped[str] = mapped_column(String(32))
    plan_id: Mapped[str] = mapped_column(String(64))
    interval_start: Mapped[datetime]
    interval_end: Mapped[datetime]
    period_start: Mapped[datetime]
    minutes: Mapped[int]
    included_minutes: Mapped[int]
    overage_minutes: Mapped[int]
    billable_minutes: Mapped[int]
    small_minutes: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default=RecordState.PENDING.value)
    # A flusher's lease: the record is being sent by `claimed_by` until `claim_expires_at`
    # (real time). No row lock is held while the request is on the wire.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
