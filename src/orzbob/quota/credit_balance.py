"""Credits in a period: granted there, plus the balance carried in from earlier periods,
applied up to the period's gross bill (the estimate never goes below $0.00)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.credits.service import credit_service
from orzbob.kit.money import ZERO, from_cents, minutes_cost, to_cents
from orzbob.quota.allocation import org_period
from orzbob.quota.models import QuotaPeriod, QuotaTierRollup
from orzbob.quota.periods import Period

# Walking credit balances forward never needs more than a few years of monthly periods; the
# bound only stops a corrupt period definition from looping.
MAX_CARRY_PERIODS = 600


@dataclass(frozen=True)
class Credits:
    granted_this_period: Decimal
    carried_in: Decimal
    applied: Decimal
    balance: Decimal


def credits_for_period(
    session: Session,
    org: Org,
    catalog: Catalog,
    current: Period,
    *,
    now: datetime,
    gross: Decimal,
    grants: list[tuple[datetime, int]] | None = None,
) -> Credits:
    """Credits granted this period plus the balance carried in from earlier ones, applied
    up to this period's gross bill (so the estimate never goes below $0.00). `grants`:
    the org's grants up to `now`, when the caller has read them."""
    if grants is None:
        grants = credit_grants_until(session, org.id, now)
    if not grants:
        return Credits(ZERO, ZERO, ZERO, ZERO)
    balance = 0
    if grants[0][0] < current.start:
        balance = _carried_in(session, org, catalog, grants, current)
    granted = sum(c for at, c in grants if at >= current.start)
    available = balance + granted
    applied = min(available, to_cents(gross))
    return Credits(
        granted_this_period=from_cents(granted),
        carried_in=from_cents(balance),
        applied=from_cents(applied),
        balance=from_cents(available - applied),
    )


def credit_grants_until(
    session: Session, org_id: uuid.UUID, now: datetime
) -> list[tuple[datetime, int]]:
    return credit_service.grants_until(session, org_id, now)


def _carried_in(
    session: Session,
    org: Org,
    catalog: Catalog,
    grants: list[tuple[datetime, int]],
    current: Period,
) -> int:
    """Walk the closed periods since the first grant: each absorbs what it can of the
    credit available to it, the rest moves on. Reads each period's rollups, never the
    records; a closed period is charged the base recorded for it (see `_base`)."""
    first = grants[0][0]
    bases: dict[datetime, tuple[str | None, int | None]] = {
        start: (plan_id, cents)
        for start, plan_id, cents in session.execute(
            select(
                QuotaPeriod.period_start, QuotaPeriod.plan_id, QuotaPeriod.monthly_base_cents
            ).where(
                QuotaPeriod.org_id == org.id,
                QuotaPeriod.period_end > first,
                QuotaPeriod.period_start < current.start,
            )
        )
    }
    lines: dict[datetime, dict[str, int]] = defaultdict(dict)
    for start, tier, minutes in session.execute(
        select(
            QuotaTierRollup.period_start, QuotaTierRollup.tier, QuotaTierRollup.billable_minutes
        ).where(
            QuotaTierRollup.org_id == org.id,
            QuotaTierRollup.period_start >= org_period(org, first).start,
            QuotaTierRollup.period_start < current.start,
        )
    ):
        lines[start][tier] = lines[start].get(tier, 0) + int(minutes)
    balance = 0
    period = org_period(org, first)
    for _ in range(MAX_CARRY_PERIODS):
        if period.start >= current.start:
            break
        # Rollup keys match the walked periods unless the subscription moved the boundaries;
        # then every rollup starting inside this period counts here, each tier line rounded once.
        billable: dict[str, int] = defaultdict(int)
        for s in lines:
            if period.start <= s < period.end:
                for t, m in lines[s].items():
                    billable[t] += m
        base = _base(
            catalog, org, [bases[s] for s in sorted(bases) if period.start <= s < period.end]
        )
        cost = base + sum(
            (
                minutes_cost(m, catalog.tier(t).hourly_rate)
                for t, m in billable.items()
                if catalog.has_tier(t)
            ),
            ZERO,
        )
        available = balance + sum(c for at, c in grants if period.start <= at < period.end)
        balance = available - min(available, to_cents(cost))
        period = org_period(org, period.end)
    return balance


def _base(catalog: Catalog, org: Org, recorded: list[tuple[str | None, int | None]]) -> Decimal:
    """The base a closed period is charged: as recorded on its latest row (plan changes
    record every period they leave behind), else the org's plan, unchanged since."""
    for plan_id, cents in reversed(recorded):
        if cents is not None:
            return from_cents(cents)
        if plan_id:
            return catalog.plan(plan_id).monthly_base if catalog.has_plan(plan_id) else ZERO
    return catalog.plan(org.plan_id).monthly_base
