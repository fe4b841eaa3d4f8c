"""Billing periods: anchored on the sign-up day, or the subscription's (docs/spec.md §4)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from orzbob.accounts.models import Org
from orzbob.quota.periods import OrgPeriods, anchored_period, boundaries_between, period_for
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.quota.usage import move_clock_to, records, rollups_match_records, run


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("anchor", "at", "start", "end"),
    [
        (10, utc(2026, 3, 10), utc(2026, 3, 10), utc(2026, 4, 10)),
        (10, utc(2026, 4, 9, 23, 59, 59), utc(2026, 3, 10), utc(2026, 4, 10)),
        (31, utc(2027, 2, 1), utc(2027, 1, 31), utc(2027, 2, 28)),
        (31, utc(2027, 3, 1), utc(2027, 2, 28), utc(2027, 3, 31)),
        (31, utc(2028, 2, 1), utc(2028, 1, 31), utc(2028, 2, 29)),
        (31, utc(2026, 4, 30, 12), utc(2026, 4, 30), utc(2026, 5, 31)),
        (30, utc(2027, 2, 28), utc(2027, 2, 28), utc(2027, 3, 30)),
        (1, utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
    ],
)
def test_anchored_months(anchor: int, at: datetime, start: datetime, end: datetime) -> None:
    p = anchored_period(anchor, at)
    assert (p.start, p.end) == (start, end)


def test_the_subscription_period_wins_when_known() -> None:
    signup = utc(2026, 1, 5)
    sub = (utc(2026, 3, 17, 14, 30), utc(2026, 4, 17, 14, 30))
    p = period_for(
        utc(2026, 4, 1), signup_at=signup, subscription_start=sub[0], subscription_end=sub[1]
    )
    assert (p.start, p.end) == sub
    # Before it began: the sign-up months, cut short where the subscription starts.
    p = period_for(
        utc(2026, 3, 10), signup_at=signup, subscription_start=sub[0], subscription_end=sub[1]
    )
    assert (p.start, p.end) == (utc(2026, 3, 5), sub[0])


def test_usage_at_2359_on_the_last_day_and_0001_on_the_first_are_in_different_periods(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")  # signed up 2026-03-10: periods start on the 10th
    move_clock_to(runtime, utc(2026, 4, 9, 23, 58))
    run(client, runtime, org, "small", 60)  # 23:58 → 23:59 on the last day
    move_clock_to(runtime, utc(2026, 4, 10, 0, 0))
    run(client, runtime, org, "small", 60)  # 00:00 → 00:01 on the first day
    move_clock_to(runtime, utc(2026, 4, 10, 23, 59))
    run(client, runtime, org, "small", 120)  # straddles midnight inside the new period
    rows = records(runtime, org.id)
    assert [(r.interval_end, r.period_start, r.minutes) for r in rows] == [
        (utc(2026, 4, 9, 23, 59), utc(2026, 3, 10), 1),
        (utc(2026, 4, 10, 0, 1), utc(2026, 4, 10), 1),
        (utc(2026, 4, 11), utc(2026, 4, 10), 1),
        (utc(2026, 4, 11, 0, 1), utc(2026, 4, 10), 1),
    ]
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["period_start"] == "2026-04-10T00:00:00Z"
    assert body["reset_date"] == "2026-05-10T00:00:00Z"
    assert body["tiers"][0]["minutes"] == 3  # the March minute is not in April's bill
    rollups_match_records(runtime, org.id)


def test_a_run_across_the_reset_is_split_at_the_boundary(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    move_clock_to(runtime, utc(2026, 4, 9, 23, 59))
    run(client, runtime, org, "small", 120)
    rows = records(runtime, org.id)
    assert [(r.period_start, r.minutes) for r in rows] == [
        (utc(2026, 3, 10), 1),
        (utc(2026, 4, 10), 1),
    ]
    # The new period starts with the whole allowance again.
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["tiers"][0]["included_minutes"] == 1 and body["hours_used"] == 0.01


class TestJan31Anchor:
    @pytest.fixture
    def clock(self):  # type: ignore[no-untyped-def]
        from orzbob.kit.clock import ManualClock

        return ManualClock(utc(2027, 1, 31, 9, 0))

    def test_resets_on_feb_28_and_feb_29_in_a_leap_year(
        self, client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org(plan="base-plus-usage")
        body = client.get("/v1/billing", headers=org.headers).json()
        assert (body["period_start"], body["reset_date"]) == (
            "2027-01-31T00:00:00Z",
            "2027-02-28T00:00:00Z",
        )
        move_clock_to(runtime, utc(2027, 2, 27, 23, 30))
        run(client, runtime, org, "small", 3600)  # 23:30 → 00:30 across the Feb 28 reset
        assert [(r.period_start, r.minutes) for r in records(runtime, org.id)] == [
            (utc(2027, 1, 31), 30),
            (utc(2027, 2, 28), 30),
        ]
        body = client.get("/v1/billing", headers=org.headers).json()
        assert (body["period_start"], body["reset_date"]) == (
            "2027-02-28T00:00:00Z",
            "2027-03-31T00:00:00Z",
        )
        move_clock_to(runtime, utc(2028, 2, 1))
        body = client.get("/v1/billing", headers=org.headers).json()
        assert (body["period_start"], body["reset_date"]) == (
            "2028-01-31T00:00:00Z",
            "2028-02-29T00:00:00Z",
        )
        move_clock_to(runtime, utc(2028, 2, 29, 0, 0))
        body = client.get("/v1/billing", headers=org.headers).json()
        assert body["reset_date"] == "2028-03-31T00:00:00Z"


def test_billing_follows_the_subscription_period(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    start, end = utc(2026, 3, 12, 8, 15), utc(2026, 4, 12, 8, 15)
    with runtime.session() as s:
        row = s.get(Org, org.id)
        assert row is not None
        row.subscription_period_start, row.subscription_period_end = start, end
    move_clock_to(runtime, start + timedelta(hours=1))
    run(client, runtime, org, "small", 600)
    body = client.get("/v1/billing", headers=org.headers).json()
    assert (body["period_start"], body["reset_date"]) == (
        "2026-03-12T08:15:00Z",
        "2026-04-12T08:15:00Z",
    )
    assert body["tiers"][0]["minutes"] == 10


_INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    signup=_INSTANTS,
    subscription=st.none() | st.tuples(_INSTANTS, _INSTANTS),
    instants=st.lists(_INSTANTS, min_size=1, max_size=12),
    lengths=st.lists(st.integers(0, 90 * 24 * 3600), min_size=1, max_size=12),
)
def test_org_periods_answer_as_period_for_and_boundaries_between(
    signup: datetime,
    subscription: tuple[datetime, datetime] | None,
    instants: list[datetime],
    lengths: list[int],
) -> None:
    """The remembered period is only ever the one `period_for` gives, whatever the order of
    the instants asked about, also for terms that do not partition time (a subscription
    ending before it starts)."""
    start, end = subscription or (None, None)
    terms = {"signup_at": signup, "subscription_start": start, "subscription_end": end}
    periods = OrgPeriods(**terms)  # type: ignore[arg-type]
    for at, length in zip(instants, lengths * len(instants), strict=False):
        assert periods.at(at) == period_for(at, **terms)  # type: ignore[arg-type]
        # Nearby instants too: the ones a checkpoint asks about next.
        for later in (at + timedelta(seconds=length), at + timedelta(minutes=1)):
            assert periods.at(later) == period_for(later, **terms)  # type: ignore[arg-type]
            assert periods.boundaries(at, later) == boundaries_between(at, later, **terms)  # type: ignore[arg-type]
