"""Credits in a period: granted there, plus the balance carried in from earlier periods,
applied up to the period's gross bill (the estimate never goes below $0.00).

Quota sits below credits, so the quota status asks for this through the hook it offers
(`quota.service.credit_providers`, filled by `orzbob.hooks.install_hooks`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from orzbob.accounts.models import OrgFacts
from orzbob.catalog.models import Catalog
from orzbob.credits.repository import credit_repository
from orzbob.kit.money import ZERO, from_cents, to_cents
from orzbob.quota.costs import closed_period_costs
from orzbob.quota.periods import Period
from orzbob.quota.service import Credits


def credits_for_period(
    session: Session,
    org: OrgFacts,
    catalog: Catalog,
    current: Period,
    now: datetime,
    gross: Decimal,
    grants: list[tuple[datetime, int]] | None = None,
) -> Credits:
    """Credits granted this period plus the balance carried in from earlier ones, applied
    up to this period's gross bill (so the estimate never goes below $0.00). `grants`: the
    org's grants up to `now`, when the caller has read them."""
    if grants is None:
        grants = credit_repository.grants_until(session, org.id, now)
    if not grants:
        return Credits(ZERO, ZERO, ZERO, ZERO)
    balance = 0
    if grants[0][0] < current.start:
        balance = carried_in(
            grants,
            closed_period_costs(session, org, catalog, since=grants[0][0], current=current),
        )
    granted = sum(c for at, c in grants if at >= current.start)
    available = balance + granted
    applied = min(available, to_cents(gross))
    return Credits(
        granted_this_period=from_cents(granted),
        carried_in=from_cents(balance),
        applied=from_cents(applied),
        balance=from_cents(available - applied),
    )


def carried_in(grants: list[tuple[datetime, int]], costs: list[tuple[Period, int]]) -> int:
    """Walk the closed periods since the first grant: each absorbs what it can of the credit
    available to it (cents), the rest moves on."""
    balance = 0
    for period, cost in costs:
        available = balance + sum(c for at, c in grants if period.start <= at < period.end)
        balance = available - min(available, cost)
    return balance
