"""Allocating usage to the allowance, in the transaction that records it (SPEC §1, §4)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import insert_ignore, new_id
from orzbob.metering.models import RecordState, UsageRecord
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup
from orzbob.quota.periods import Period, period_for

_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class UsageDraft:
    """An amount of usage about to be recorded; never crosses a period or a UTC midnight."""

    org_id: uuid.UUID
    instance_id: uuid.UUID
    segment_id: uuid.UUID
    tier: str
    interval_start: datetime
    interval_end: datetime
    minutes: int


def org_period(org: Org, at: datetime) -> Period:
    return period_for(
        at,
        signup_at=org.signup_at,
        subscription_start=org.subscription_period_start,
        subscription_end=org.subscription_period_end,
    )


def _owning_instant(draft: UsageDraft) -> datetime:
    # A record belongs to the period of its interval end; an end exactly on a boundary is the
    # last instant of the earlier period.
    if draft.interval_end > draft.interval_start:
        return draft.interval_end - _EPSILON
    return draft.interval_end


def lock_period(session: Session, org_id: uuid.UUID, period: Period) -> QuotaPeriod:
    """Get or create the org's period row and lock it for the rest of the transaction."""
    insert_ignore(
        session,
        QuotaPeriod.__table__,  # type: ignore[arg-type]
        [
            {
                "org_id": org_id,
                "period_start": period.start,
                "period_end": period.end,
                "used_small_minutes": 0,
                "exhausted_at": None,
            }
        ],
    )
    stmt = (
        select(QuotaPeriod)
        .where(QuotaPeriod.org_id == org_id, QuotaPeriod.period_start == period.start)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one()


def allocate(
    session: Session, org: Org, drafts: list[UsageDraft], *, catalog: Catalog, now: datetime
) -> list[dict[str, Any]]:
    """Write usage records for `drafts` (in order), consuming the allowance in that order and
    updating the period, tier and daily rollups. Returns the record rows written."""
    if not drafts:
        return []
    plan = catalog.plan(org.plan_id)
    periods: dict[datetime, QuotaPeriod] = {}
    tier_sums: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    day_sums: dict[date, int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    for draft in drafts:
        instant = _owning_instant(draft)
        period = org_period(org, instant)
        qp = periods.get(period.start)
        if qp is None:
            qp = periods[period.start] = lock_period(session, org.id, period)
        weight = catalog.tier(draft.tier).small_hour_weight
        remaining = max(0, plan.included_small_minutes - qp.used_small_minutes)
        # Whole minutes only: a minute that does not fit the allowance entirely is overage.
        included = min(draft.minutes, remaining // weight)
        overage = draft.minutes - included
        small = included * weight
        billable = overage if plan.bills_overage else 0
        qp.used_small_minutes += small
        if (
            qp.exhausted_at is None
            and plan.included_small_minutes > 0
            and (overage > 0 or qp.used_small_minutes >= plan.included_small_minutes)
        ):
            qp.exhausted_at = draft.interval_end
            metrics.quota_exceeded_total.labels(plan=plan.id).inc()
        sums = tier_sums[(period.start, draft.tier)]
        for i, v in enumerate((draft.minutes, included, overage, billable, small)):
            sums[i] += v
        day_sums[instant.date()] += draft.minutes
        rows.append(
            {
                "id": new_id(),
                "org_id": org.id,
                "instance_id": draft.instance_id,
                "segment_id": draft.segment_id,
                "tier": draft.tier,
                "plan_id": plan.id,
                "interval_start": draft.interval_start,
                "interval_end": draft.interval_end,
                "period_start": period.start,
                "minutes": draft.minutes,
                "included_minutes": included,
                "overage_minutes": overage,
                "billable_minutes": billable,
                "small_minutes": small,
                "state": RecordState.PENDING.value,
                "attempts": 0,
                "last_error": None,
                "created_at": now,
                "sent_at": None,
            }
        )
        metrics.usage_records_total.labels(tier=draft.tier).inc()
    session.execute(insert(UsageRecord), rows)
    _bump_tiers(session, org.id, tier_sums)
    _bump_days(session, org.id, day_sums)
    session.flush()
    return rows


def _bump_tiers(
    session: Session, org_id: uuid.UUID, sums: dict[tuple[datetime, str], list[int]]
) -> None:
    t = QuotaTierRollup.__table__
    insert_ignore(
        session,
        t,  # type: ignore[arg-type]
        [
            {
                "org_id": org_id,
                "period_start": ps,
                "tier": tier,
                "minutes": 0,
                "included_minutes": 0,
                "overage_minutes": 0,
                "billable_minutes": 0,
                "small_minutes": 0,
            }
            for ps, tier in sums
        ],
    )
    for (ps, tier), (m, inc, ovg, bill, small) in sums.items():
        session.execute(
            update(QuotaTierRollup)
            .where(
                QuotaTierRollup.org_id == org_id,
                QuotaTierRollup.period_start == ps,
                QuotaTierRollup.tier == tier,
            )
            .values(
                minutes=QuotaTierRollup.minutes + m,
                included_minutes=QuotaTierRollup.included_minutes + inc,
                overage_minutes=QuotaTierRollup.overage_minutes + ovg,
                billable_minutes=QuotaTierRollup.billable_minutes + bill,
                small_minutes=QuotaTierRollup.small_minutes + small,
            )
            .execution_options(synchronize_session=False)
        )


def _bump_days(session: Session, org_id: uuid.UUID, sums: dict[date, int]) -> None:
    insert_ignore(
        session,
        DailyUsage.__table__,  # type: ignore[arg-type]
        [{"org_id": org_id, "day": d, "minutes": 0} for d in sums],
    )
    for d, minutes in sums.items():
        session.execute(
            update(DailyUsage)
            .where(DailyUsage.org_id == org_id, DailyUsage.day == d)
            .values(minutes=DailyUsage.minutes + minutes)
            .execution_options(synchronize_session=False)
        )
