"""The forecast for the period end: this period's burn rate so far, carried to its end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from orzbob.catalog.models import Plan
from orzbob.kit.money import ZERO, minutes_cost
from orzbob.quota.periods import Period

_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class TierUsage:
    tier: str
    hourly_rate: Decimal
    weight: int
    minutes: int
    billable_minutes: int


@dataclass(frozen=True)
class Forecast:
    projected_small_minutes: Decimal
    projected_gross: Decimal
    projected_bill: Decimal
    # When the allowance ran out, or will at this rate, if within the period; else None.
    allowance_runs_out_at: datetime | None


def forecast(
    *,
    plan: Plan,
    tiers: list[TierUsage],
    period: Period,
    now: datetime,
    used_small_minutes: int,
    exhausted_at: datetime | None,
    credits_available: Decimal,
) -> Forecast:
    """Project each tier's minutes linearly: minutes × period length / time elapsed.

    The allowance still left absorbs the projected extra usage first, in proportion across
    tiers (a forecast, so whole-minute splitting is not modelled); the rest is overage at
    tier rates where the plan bills it. Credits available this period come off the total.
    """
    elapsed = (now - period.start) // _US
    length = (period.end - period.start) // _US
    weighted = sum(t.minutes * t.weight for t in tiers)
    factor = Decimal(length) / Decimal(elapsed) if elapsed > 0 and weighted > 0 else Decimal(1)
    future = {t.tier: Decimal(t.minutes) * (factor - 1) for t in tiers}
    future_weighted = sum((future[t.tier] * t.weight for t in tiers), Decimal(0))
    included = plan.included_small_minutes
    remaining = Decimal(max(0, included - used_small_minutes)) if included > 0 else Decimal(0)
    over_share = (
        max(Decimal(0), future_weighted - remaining) / future_weighted
        if future_weighted > 0
        else Decimal(0)
    )
    gross = plan.monthly_base
    for t in tiers:
        extra = future[t.tier] * over_share if plan.bills_overage else Decimal(0)
        billable = int((Decimal(t.billable_minutes) + extra).to_integral_value(ROUND_HALF_UP))
        gross += minutes_cost(billable, t.hourly_rate)
    runs_out: datetime | None = None
    if included > 0:
        if exhausted_at is not None:
            runs_out = exhausted_at
        elif elapsed > 0 and weighted > 0:
            # The allowance burns at the weighted rate seen so far this period.
            needed = remaining * Decimal(elapsed) / Decimal(weighted)
            at = now + timedelta(microseconds=int(needed))
            runs_out = at if at < period.end else None
    return Forecast(
        projected_small_minutes=Decimal(weighted) * factor,
        projected_gross=gross,
        projected_bill=max(ZERO, gross - credits_available),
        allowance_runs_out_at=runs_out,
    )
