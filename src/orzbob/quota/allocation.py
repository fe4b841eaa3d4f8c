"""Allocating usage to the allowance, in the transaction that records it (docs/spec.md §1, §4).
Quota owns the allowance and the rollups; metering writes the usage records."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orzbob.accounts.models import Org, OrgFacts
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import on_commit
from orzbob.kit.money import to_cents
from orzbob.quota.models import QuotaPeriod
from orzbob.quota.periods import OrgPeriods, Period, period_for
from orzbob.quota.repository import quota_repository

_EPSILON = timedelta(microseconds=1)
_PERIOD_COLUMNS = ("used_small_minutes", "exhausted_at", "plan_id", "monthly_base_cents")


# Drafts and allocations are values nobody changes, but not frozen dataclasses: a frozen
# one's constructor sets each field through `object.__setattr__`, two to three times the
# cost, and a 100,000-segment checkpoint pass builds 200,000 of them.
@dataclass(slots=True)
class UsageDraft:
    """An amount of usage about to be recorded; never crosses a period or a UTC midnight."""

    org_id: uuid.UUID
    instance_id: uuid.UUID
    segment_id: uuid.UUID
    tier: str
    interval_start: datetime
    interval_end: datetime
    minutes: int


def org_period(org: OrgFacts, at: datetime) -> Period:
    return period_for(
        at,
        signup_at=org.signup_at,
        subscription_start=org.subscription_period_start,
        subscription_end=org.subscription_period_end,
    )


def org_periods(org: OrgFacts) -> OrgPeriods:
    """The org's periods, for loops over many instants (see `OrgPeriods`)."""
    return OrgPeriods(
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
    _insert_periods(session, wanted)
    return quota_repository.lock_periods(session, {(org_id, p.start) for org_id, p in wanted})


def _lock_period_values(
    session: Session, wanted: dict[tuple[uuid.UUID, datetime], Period]
) -> dict[tuple[uuid.UUID, datetime], tuple[int, datetime | None, str | None, int | None]]:
    """`lock_periods` as plain values (see `quota_repository.lock_period_values`). Period
    rows are never deleted, so the rows are locked first and only those missing (new
    periods) are inserted and then locked: in the steady state, one statement. The locks
    on new rows come after the others, out of key order; only at a period's first usage,
    and a checkpoint batch that deadlocks on it runs again."""
    locked = quota_repository.lock_period_values(session, wanted)
    missing = [key for key in wanted if key not in locked]
    if missing:
        _insert_periods(session, [(org_id, wanted[(org_id, start)]) for org_id, start in missing])
        locked.update(quota_repository.lock_period_values(session, missing))
    return locked


def _insert_periods(session: Session, periods: Iterable[tuple[uuid.UUID, Period]]) -> None:
    """Insert the rows of these (org id, period) that do not exist yet, in key order."""
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
            for org_id, p in sorted(periods, key=lambda w: (w[0], w[1].start))
        ],
    )


def _sync_loaded_periods(
    session: Session,
    values: dict[tuple[uuid.UUID, datetime], tuple[int, datetime | None, str | None, int | None]],
) -> None:
    """Period rows this session already holds as ORM objects show what the database now
    holds (as a locking read that refreshed them would), with nothing to flush."""
    identity_map = session.identity_map
    # Identity keys are (class, primary key, token): looking only at the period rows held
    # costs nothing per value where the session holds none (a checkpoint batch holds only
    # its orgs).
    for key in list(identity_map.keys()):
        if key[0] is QuotaPeriod and (row := values.get(key[1])) is not None:
            qp = identity_map.get(key)
            if qp is not None:
                for name, value in zip(_PERIOD_COLUMNS, row, strict=True):
                    set_committed_value(qp, name, value)


@dataclass(slots=True)
class _PeriodState:
    used: int
    exhausted_at: datetime | None
    plan_id: str | None
    base_cents: int | None


@dataclass(slots=True)
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
    orgs: Mapping[uuid.UUID, OrgFacts],
    drafts_by_org: dict[uuid.UUID, list[UsageDraft]],
    *,
    catalog: Catalog,
    now: datetime,
) -> list[Allocation]:
    """Consume each org's allowance by its drafts, in order, and update the period, tier and
    daily rollups, all in the caller's transaction (the period rows stay locked until it
    ends). Returns the allocations, for the caller to record in the same transaction."""
    # Each org's drafts with the period they belong to and its owning instant, orgs in id
    # order (the order the allowance is consumed in, and the period rows are locked in).
    placed: list[tuple[uuid.UUID, list[tuple[UsageDraft, Period, datetime]]]] = []
    wanted: dict[tuple[uuid.UUID, datetime], Period] = {}
    for org_id in sorted(drafts_by_org):
        periods_of = org_periods(orgs[org_id])
        items = []
        last: Period | None = None
        for draft in drafts_by_org[org_id]:
            instant = _owning_instant(draft)
            period = periods_of.at(instant)
            if period is not last:
                wanted[(org_id, period.start)] = last = period
            items.append((draft, period, instant))
        if items:
            placed.append((org_id, items))
    if not placed:
        return []
    locked = _lock_period_values(session, wanted)
    base_cents = {p.id: to_cents(p.monthly_base) for p in catalog.plans}
    weights: dict[str, int] = {}
    out: list[Allocation] = []
    changed: list[tuple[Any, ...]] = []
    tier_rows: list[dict[str, Any]] = []
    day_rows: list[dict[str, Any]] = []
    for org_id, items in placed:
        plan = catalog.plan(orgs[org_id].plan_id)
        allowance = plan.included_small_minutes
        # Each period's new values, written in one statement at the end (the rows are locked).
        state: dict[datetime, _PeriodState] = {}
        tier_sums: dict[tuple[datetime, str], list[int]] = {}
        day_sums: dict[date, int] = {}
        for draft, period, instant in items:
            st = state.get(period.start)
            if st is None:
                st = state[period.start] = _PeriodState(*locked[(org_id, period.start)])
            weight = weights.get(draft.tier)
            if weight is None:
                weight = weights[draft.tier] = catalog.tier(draft.tier).small_hour_weight
            remaining = max(0, allowance - st.used)
            # Whole minutes only: a minute that does not fit the allowance entirely is overage.
            included = min(draft.minutes, remaining // weight)
            overage = draft.minutes - included
            small = included * weight
            billable = overage if plan.bills_overage else 0
            st.used += small
            st.plan_id = plan.id
            st.base_cents = base_cents[plan.id]
            if st.exhausted_at is None and allowance > 0 and (overage > 0 or st.used >= allowance):
                # The moment the last included minute was used, not the end of the record
                # that crossed (records run up to a day long, split only at midnights).
                st.exhausted_at = min(
                    draft.interval_end, draft.interval_start + timedelta(minutes=included)
                )
                on_commit(session, metrics.quota_exceeded_total.labels(plan=plan.id).inc)
            sums = tier_sums.get((period.start, draft.tier))
            if sums is None:
                sums = tier_sums[(period.start, draft.tier)] = [0, 0, 0, 0, 0]
            sums[0] += draft.minutes
            sums[1] += included
            sums[2] += overage
            sums[3] += billable
            sums[4] += small
            day = instant.date()
            day_sums[day] = day_sums.get(day, 0) + draft.minutes
            out.append(Allocation(draft, plan.id, period.start, included, overage, billable, small))
        for start, st in sorted(state.items()):
            values = (st.used, st.exhausted_at, st.plan_id, st.base_cents)
            if values != locked[(org_id, start)]:
                changed.append((org_id, start, *values))
                locked[(org_id, start)] = values
        tier_rows.extend(
            {
                "org_id": org_id,
                "period_start": start,
                "tier": tier,
                "minutes": m,
                "included_minutes": inc,
                "overage_minutes": ovg,
                "billable_minutes": bill,
                "small_minutes": small,
            }
            for (start, tier), (m, inc, ovg, bill, small) in sorted(tier_sums.items())
        )
        day_rows.extend(
            {"org_id": org_id, "day": d, "minutes": m} for d, m in sorted(day_sums.items())
        )
    quota_repository.save_periods(session, _PERIOD_COLUMNS, changed)
    _sync_loaded_periods(session, locked)
    quota_repository.add_to_tier_rollups(session, tier_rows)
    quota_repository.add_to_daily_usage(session, day_rows)
    session.flush()
    return out
