"""When a cap is reached: exact moments computed from the rollups and the open segments.

Pure functions over plain values, so the checkpoint (which must never record a minute past a
cap), the sweep (which pauses at the cap's moment however late it runs), the heartbeat check
and the `upcoming` warnings all agree on one answer.

Usage grows in steps: an open segment's recorded minutes are `ceil(elapsed / 60)`, so its
usage jumps by one minute right after each whole minute of run time. A cap that is a budget
(the free allowance, the daily instance-hours) is reached at the last instant its usage still
fits the budget: the next step would go past it, so that minute is never started. The spend
limit is reached at the first instant the estimate is at or over the limit: the minute that
reaches it is billed, and the estimate then shows the limit reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from orzbob.kit.money import ZERO, minutes_cost
from orzbob.metering.service import rounded_minutes

US = timedelta(microseconds=1)


class Cap:
    IDLE = "idle"
    CONTINUOUS = "continuous_cap"
    DAILY = "daily_cap"
    QUOTA = "quota_exhausted"
    SPEND = "spend_limit"


@dataclass(frozen=True)
class Run:
    """An open usage segment of a running instance, as far as it may be counted."""

    instance_id: uuid.UUID
    instance_name: str
    segment_id: uuid.UUID
    tier: str
    weight: int
    started_at: datetime
    counted_until: datetime
    emitted: int  # == rounded_minutes(started_at, counted_until)
    upto: datetime  # the latest instant this run can be counted to
    own_cut: datetime  # when this instance's own cap (idle, continuous) is reached
    own_cap: str

    def minutes(self, at: datetime) -> int:
        """Minutes this run adds to the ledger if counted up to `at`."""
        end = min(at, self.upto)
        if end <= self.counted_until:
            return 0
        return rounded_minutes(self.started_at, end) - self.emitted

    def minutes_between(self, start: datetime, end: datetime) -> int:
        """Minutes this run adds within [start, end) of its uncounted stretch (for one day)."""
        lo = max(start, self.counted_until)
        hi = min(end, self.upto)
        if hi <= lo:
            return 0
        return rounded_minutes(self.started_at, hi) - rounded_minutes(self.started_at, lo)


@dataclass(frozen=True)
class SpendBudget:
    limit: Decimal
    base: Decimal
    credits_available: Decimal
    allowance_left: int  # small-minutes
    bills_overage: bool
    billable: dict[str, int]  # billable minutes so far this period, by tier
    rates: dict[str, Decimal]

    def estimate(self, runs: list[Run], at: datetime) -> Decimal:
        """The estimated bill if every run were counted up to `at`, allocating the allowance
        in the order the ledger would (the runs' order)."""
        left = self.allowance_left
        billable = dict(self.billable)
        for run in runs:
            m = run.minutes(at)
            if m <= 0:
                continue
            included = min(m, left // run.weight)
            left -= included * run.weight
            if self.bills_overage:
                billable[run.tier] = billable.get(run.tier, 0) + m - included
        gross = self.base + sum((minutes_cost(m, self.rates[t]) for t, m in billable.items()), ZERO)
        return max(ZERO, gross - self.credits_available)


@dataclass
class OrgBudget:
    """What is left of each of an org's caps, from its rollups."""

    allowance_left: int | None = None  # small-minutes before a hard stop; None: no hard stop
    daily_cap_minutes: int | None = None
    day_used: dict[date, int] = field(default_factory=dict)  # instance-minutes by UTC day
    spend: SpendBudget | None = None


@dataclass(frozen=True)
class Cut:
    at: datetime
    cap: str


def midnight_after(at: datetime) -> datetime:
    return datetime.combine(at.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)


def _days(start: datetime, end: datetime) -> list[tuple[date, datetime, datetime]]:
    out = []
    day_start = datetime.combine(start.astimezone(UTC).date(), time(0), tzinfo=UTC)
    while day_start < end:
        nxt = day_start + timedelta(days=1)
        out.append((day_start.date(), day_start, nxt))
        day_start = nxt
    return out


def _last_fitting(fits: Callable[[datetime], bool], lo: datetime, hi: datetime) -> datetime:
    """The latest instant in [lo, hi] at which `fits` (true at lo, monotone) still holds."""
    a, b = 0, (hi - lo) // US
    while a < b:
        mid = (a + b + 1) // 2
        if fits(lo + mid * US):
            a = mid
        else:
            b = mid - 1
    return lo + a * US


def org_cut(runs: list[Run], budget: OrgBudget, *, hi: datetime) -> Cut | None:
    """The first moment at or before `hi` when one of the org's caps is reached, counting
    every run up to its own `upto`; None when none is reached by `hi`."""
    if not runs:
        return None
    lo = min(r.counted_until for r in runs)
    checks: list[tuple[str, Callable[[datetime], bool], bool]] = []
    if budget.allowance_left is not None:
        left = budget.allowance_left

        def allowance_fits(at: datetime) -> bool:
            return sum(r.weight * r.minutes(at) for r in runs) <= left

        checks.append((Cap.QUOTA, allowance_fits, False))
    if budget.daily_cap_minutes is not None:
        cap = budget.daily_cap_minutes

        def day_fits(at: datetime) -> bool:
            for day, start, end in _days(lo, at):
                used = budget.day_used.get(day, 0)
                if used + sum(r.minutes_between(start, min(end, at)) for r in runs) > cap:
                    return False
            return True

        checks.append((Cap.DAILY, day_fits, False))
    if budget.spend is not None:
        spend = budget.spend

        def under_limit(at: datetime) -> bool:
            return spend.estimate(runs, at) < spend.limit

        checks.append((Cap.SPEND, under_limit, True))
    best: Cut | None = None
    for cap_name, fits, reached_on_next in checks:
        if fits(hi):
            continue
        if not fits(lo):
            at = lo
        else:
            last = _last_fitting(fits, lo, hi)
            at = last + US if reached_on_next else last
        if best is None or at < best.at:
            best = Cut(at, cap_name)
    return best
