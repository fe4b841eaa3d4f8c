from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base


class QuotaPeriod(Base):
    """Per org and billing period: the allowance consumed. Locked while usage is allocated,
    so allowance is consumed in the order records are written."""

    __tablename__ = "quota_periods"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_end: Mapped[datetime]
    used_small_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    # When the allowance ran out in this period (first overage or exact exhaustion).
    exhausted_at: Mapped[datetime | None]
    # The plan of the latest usage allocated here: the base a closed period is charged when
    # credits carried across periods are settled (the org's plan may have changed since).
    plan_id: Mapped[str | None] = mapped_column(String(64))
    # That plan's monthly base when it was recorded, so a closed period's bill never changes
    # (a plan change, or a later price change in the catalog, leaves it as it was).
    monthly_base_cents: Mapped[int | None] = mapped_column(BigInteger)


class QuotaTierRollup(Base):
    """Per org, period and tier: the sums of its usage records (never scanned to read)."""

    __tablename__ = "quota_tier_rollups"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    included_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    overage_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    billable_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    small_minutes: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyUsage(Base):
    """Per org and UTC day: instance-minutes across all tiers (the daily cap reads this)."""

    __tablename__ = "daily_usage"
    # The fleet-wide daily gauge sums one day across all orgs.
    __table_args__ = (Index("ix_daily_usage_day", "day"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    minutes: Mapped[int] = mapped_column(BigInteger, default=0)
