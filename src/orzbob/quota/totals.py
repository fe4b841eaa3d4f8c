"""Cheap per-period totals straight from the tier rollups, for callers that look at many orgs
at once (alert thresholds after every batch of usage) and need only two numbers each."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from orzbob.catalog.models import Catalog
from orzbob.kit.money import ZERO, minutes_cost
from orzbob.quota.repository import quota_repository

PeriodKey = tuple[uuid.UUID, datetime]


@dataclass(frozen=True)
class PeriodTotals:
    # All usage in small-minute equivalents, overage included (what `percent_used` measures).
    weighted_minutes: int
    # Σ tier lines (billable minutes × rate, each rounded once): the bill before base and credits.
    usage_cost: Decimal


def period_totals(
    session: Session, keys: Iterable[PeriodKey], catalog: Catalog
) -> dict[PeriodKey, PeriodTotals]:
    """Totals of each (org, period start); one query for all of them."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    weighted: dict[PeriodKey, int] = dict.fromkeys(wanted, 0)
    cost: dict[PeriodKey, Decimal] = dict.fromkeys(wanted, ZERO)
    for org_id, start, tier, minutes, billable in quota_repository.tier_rollups_of(session, wanted):
        if not catalog.has_tier(tier):
            continue
        t = catalog.tier(tier)
        key = (org_id, start)
        weighted[key] += minutes * t.small_hour_weight
        cost[key] += minutes_cost(billable, t.hourly_rate)
    return {k: PeriodTotals(weighted[k], cost[k]) for k in wanted}
