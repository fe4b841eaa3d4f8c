"""Allocating usage to the allowance, in the transaction that records it (docs/spec.md §1, §4).
Quota owns the allowance and the rollups; metering writes the usage records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import on_commit
from orzbob.kit.money import to_cents
from orzbob.quota.models import QuotaPeriod
from orzbob.quota.periods import Period, period_for
from orzbob.quota.repository import quota_repository

_EPSILON = timedelta(microseconds=1)
_PERIOD_COLUMNS = ("used_small_minutes", "exhausted_at", "plan_id", "monthly_base_cents")


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


def lock_periods(
    session: Session, wanted: set[tuple[uuid.UUID, Period]]
) -> dict[tuple[uuid.UUID, datetime], QuotaPeriod]:
    """Get or create period rows and lock them, in key order, for the rest of the
    transaction (one statement each for the whole batch)."""
    if not wanted:
        return {}
    quota_repository.insert_periods(
        session,
        [
            {
                "org_id": org_id,
                "period_start": p.start,
                "period_end": p.end,
                "used_small_minutes": 0,
                "exhausted_at": None,
            }
            for org_id, p in sorted(wanted, key=lambda w: (w[0], w[1].start))
        ],
    )
    return quota_repository.lock_periods(session, {(org_id, p.start) for org_id, p in wanted})


@dataclass(slots=True)
class _PeriodState:
    used: int
    exhausted_at: datetime | None
    plan_id: str | None
    base_cents: int | None


@dataclass(frozen=True, slots=True)
class Allocation:
    """A draft placed in its period: how much of it the allowance covers and what is
    overage. Metering writes it as a usage record."""

    draft: UsageDraft
    plan_id: str
    period_start: datetime
    included: int
    overage: int
    billable: int
    small: int


def allocate(
    session: Session, org: Org, drafts: list[UsageDraft], *, catalog: Catalog, now: datetime
) -> list[Allocation]:
    """Allocate one org's drafts; see `allocate_many`."""
    return allocate_many(session, {org.id: org}, {org.id: drafts}, catalog=catalog, now=now)


def allocate_many(
    session: Session,
    orgs: dict[uuid.UUID, Org],
    drafts_by_org: dict[uuid.UUID, list[UsageDraft]],
    *,
    catalog: Catalog,
    now: datetime,
) -> list[Allocation]:
    """Consume each org's allowance by its drafts, in order, and update the period, tier and
    daily rollups, all in the caller's transaction (the period rows stay locked until it
    ends). Returns the allocations, for the caller to record in the same transaction."""
    placed: list[tuple[UsageDraft, Period, datetime]] = []
    for org_id in sorted(drafts_by_org):
        org = orgs[org_id]
        for draft in drafts_by_org[org_id]:
            instant = _owning_instant(draft)
            placed.append((draft, org_period(org, instant), instant))
    if not placed:
        return []
    periods = lock_periods(session, {(d.org_id, p) for d, p, _ in placed})
    tier_sums: dict[tuple[uuid.UUID, datetime, str], list[int]] = defaultdict(
        lambda: [0, 0, 0, 0, 0]
    )
    day_sums: dict[tuple[uuid.UUID, date], int] = defaultdict(int)
    out: list[Allocation] = []
    base_cents = {p.id: to_cents(p.monthly_base) for p in catalog.plans}
    # Each period's new values, written in one statement at the end (the rows are locked).
    state = {
        key: _PeriodState(qp.used_small_minutes, qp.exhausted_at, qp.plan_id, qp.monthly_base_cents)
        for key, qp in periods.items()
    }
    for draft, period, instant in placed:
        org = orgs[draft.org_id]
        plan = catalog.plan(org.plan_id)
        st = state[(org.id, period.start)]
        weight = catalog.tier(draft.tier).small_hour_weight
        remaining = max(0, plan.included_small_minutes - st.used)
        # Whole minutes only: a minute that does not fit the allowance entirely is overage.
        included = min(draft.minutes, remaining // weight)
        overage = draft.minutes - included
        small = included * weight
        billable = overage if plan.bills_overage else 0
        st.used += small
        st.plan_id = plan.id
        st.base_cents = base_cents[plan.id]
        if (
            st.exhausted_at is None
            and plan.included_small_minutes > 0
            and (overage > 0 or st.used >= plan.included_small_minutes)
        ):
            # The moment the last included minute was used, not the end of the record that
            # crossed (records run up to a day long, split only at midnights).
            st.exhausted_at = min(
                draft.interval_end, draft.interval_start + timedelta(minutes=included)
            )
            on_commit(session, metrics.quota_exceeded_total.labels(plan=plan.id).inc)
        sums = tier_sums[(org.id, period.start, draft.tier)]
        sums[0] += draft.minutes
        sums[1] += included
        sums[2] += overage
        sums[3] += billable
        sums[4] += small
        day_sums[(org.id, instant.date())] += draft.minutes
        out.append(Allocation(draft, plan.id, period.start, included, overage, billable, small))
    changed = []
    for key, st in sorted(state.items()):
        qp = periods[key]
        values = (st.used, st.exhausted_at, st.plan_id, st.base_cents)
        if values != (qp.used_small_minutes, qp.exhausted_at, qp.plan_id, qp.monthly_base_cents):
            changed.append((*key, *values))
            # The locked ORM rows stay what the database now holds, with nothing to flush.
            for name, value in zip(_PERIOD_COLUMNS, values, strict=True):
                set_committed_value(qp, name, value)
    quota_repository.save_periods(session, _PERIOD_COLUMNS, changed)
    quota_repository.add_to_tier_rollups(
        session,
        [
            {
                "org_id": org_id,
                "period_start": ps,
                "tier": tier,
                "minutes": m,
                "included_minutes": inc,
                "overage_minutes": ovg,
                "billable_minutes": bill,
                "small_minutes": small,
            }
            for (org_id, ps, tier), (m, inc, ovg, bill, small) in sorted(tier_sums.items())
        ],
    )
    quota_repository.add_to_daily_usage(
        session,
        [{"org_id": org_id, "day": d, "minutes": m} for (org_id, d), m in sorted(day_sums.items())],
    )
    session.flush()
    return out
