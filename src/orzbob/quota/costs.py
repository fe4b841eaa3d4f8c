"""What each closed period cost: the base recorded for it plus its billable minutes, read from
the rollups, never the records. The credits domain walks these to carry a credit balance
forward (`credits.balance`)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from orzbob.accounts.models import OrgFacts
from orzbob.catalog.models import Catalog
from orzbob.kit.money import ZERO, from_cents, minutes_cost, to_cents
from orzbob.quota.allocation import org_period
from orzbob.quota.periods import Period
from orzbob.quota.repository import quota_repository

# Walking periods forward never needs more than a few years of monthly periods; the bound
# only stops a corrupt period definition from looping.
MAX_CARRY_PERIODS = 600


def closed_period_costs(
    session: Session, org: OrgFacts, catalog: Catalog, *, since: datetime, current: Period
) -> list[tuple[Period, int]]:
    """(period, gross cost in cents) of each of the org's periods from the one containing
    `since` up to `current` (excluded), oldest first. A closed period is charged the base
    recorded for it (see `_base`)."""
    first = org_period(org, since)
    bases = quota_repository.recorded_bases(
        session, org.id, ending_after=since, before=current.start
    )
    lines: dict[datetime, dict[str, int]] = defaultdict(dict)
    for start, tier, minutes in quota_repository.billable_minutes_by_tier(
        session, org.id, start=first.start, before=current.start
    ):
        lines[start][tier] = lines[start].get(tier, 0) + minutes
    costs: list[tuple[Period, int]] = []
    period = first
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
        costs.append((period, to_cents(cost)))
        period = org_period(org, period.end)
    return costs


def _base(
    catalog: Catalog, org: OrgFacts, recorded: list[tuple[str | None, int | None]]
) -> Decimal:
    """The base a closed period is charged: as recorded on its latest row (plan changes
    record every period they leave behind), else the org's plan, unchanged since."""
    for plan_id, cents in reversed(recorded):
        if cents is not None:
            return from_cents(cents)
        if plan_id:
            return catalog.plan(plan_id).monthly_base if catalog.has_plan(plan_id) else ZERO
    return catalog.plan(org.plan_id).monthly_base
