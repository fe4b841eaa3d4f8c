"""Billing periods: the subscription's when known, else months anchored on the sign-up day."""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


@functools.lru_cache(maxsize=4096)
def _anchored(year: int, month: int, day: int) -> datetime:
    # A day-31 anchor falls on the month's last day (Feb 28/29, Apr 30, …).
    last = calendar.monthrange(year, month)[1]
    return datetime.combine(date(year, month, min(day, last)), time(0), tzinfo=UTC)


def _shift(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def anchored_period(anchor_day: int, at: datetime) -> Period:
    """The monthly period anchored on `anchor_day` (1–31, midnight UTC) that contains `at`."""
    at = at.astimezone(UTC)
    this = _anchored(at.year, at.month, anchor_day)
    if at >= this:
        y, m = _shift(at.year, at.month, 1)
        return Period(this, _anchored(y, m, anchor_day))
    y, m = _shift(at.year, at.month, -1)
    return Period(_anchored(y, m, anchor_day), this)


def period_for(
    at: datetime,
    *,
    signup_at: datetime,
    subscription_start: datetime | None = None,
    subscription_end: datetime | None = None,
) -> Period:
    """The billing period containing `at`.

    The subscription's period is used as Polar reports it; outside it (a renewal not yet
    reported, or before the subscription) months continue on the subscription's anchor day.
    """
    if subscription_start is not None and subscription_end is not None:
        if subscription_start <= at < subscription_end:
            return Period(subscription_start, subscription_end)
        if at >= subscription_end:
            following = anchored_period(subscription_start.astimezone(UTC).day, at)
            return Period(max(following.start, subscription_end), following.end)
        # Before the subscription began: the sign-up months, cut short where it starts.
        before = anchored_period(signup_at.astimezone(UTC).day, at)
        return Period(before.start, min(before.end, subscription_start))
    return anchored_period(signup_at.astimezone(UTC).day, at)


def boundaries_between(
    start: datetime,
    end: datetime,
    *,
    signup_at: datetime,
    subscription_start: datetime | None = None,
    subscription_end: datetime | None = None,
) -> list[datetime]:
    """Every period boundary and UTC midnight strictly inside (start, end), ascending."""
    points: set[datetime] = set()
    cursor = start
    while True:
        p = period_for(
            cursor,
            signup_at=signup_at,
            subscription_start=subscription_start,
            subscription_end=subscription_end,
        )
        if p.end >= end:
            break
        points.add(p.end)
        cursor = p.end
    day = datetime.combine(start.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)
    while day < end:
        points.add(day)
        day += timedelta(days=1)
    return sorted(p for p in points if start < p < end)


class OrgPeriods:
    """`period_for` and `boundaries_between` with one org's terms fixed, for loops that ask
    about many instants of the same few periods (a checkpoint batch, an allocation).

    The last period found is remembered and answered again for any instant it contains:
    with valid terms (no subscription, or one that starts before it ends) the periods
    partition time, so the period containing an instant is the one `period_for` gives.
    Terms that do not partition time are never remembered."""

    __slots__ = ("_last", "_midnight", "_remember", "signup_at", "sub_end", "sub_start")

    def __init__(
        self,
        *,
        signup_at: datetime,
        subscription_start: datetime | None = None,
        subscription_end: datetime | None = None,
    ) -> None:
        self.signup_at = signup_at
        self.sub_start = subscription_start
        self.sub_end = subscription_end
        self._remember = (
            subscription_start is None
            or subscription_end is None
            or subscription_start < subscription_end
        )
        self._last: Period | None = None
        self._midnight: tuple[date, datetime] | None = None

    def at(self, at: datetime) -> Period:
        """The billing period containing `at` (as `period_for`)."""
        last = self._last
        if last is not None and last.start <= at < last.end:
            return last
        p = period_for(
            at,
            signup_at=self.signup_at,
            subscription_start=self.sub_start,
            subscription_end=self.sub_end,
        )
        if self._remember:
            self._last = p
        return p

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """Every period boundary and UTC midnight strictly inside (start, end), ascending
        (as `boundaries_between`)."""
        if end <= self._next_midnight(start) and end <= self.at(start).end:
            return []
        return boundaries_between(
            start,
            end,
            signup_at=self.signup_at,
            subscription_start=self.sub_start,
            subscription_end=self.sub_end,
        )

    def _next_midnight(self, at: datetime) -> datetime:
        day = at.astimezone(UTC).date()
        cached = self._midnight
        if cached is None or cached[0] != day:
            cached = (day, datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC))
            self._midnight = cached
        return cached[1]
