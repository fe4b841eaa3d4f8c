"""Property: whatever the usage and plan switches, allocation and rollups stay exact."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from orzbob.accounts.service import account_service
from orzbob.kit.money import ZERO, minutes_cost
from orzbob.metering.models import UsageRecord
from orzbob.quota.service import quota_service
from orzbob.runtime import Runtime
from tests.conftest import T0
from tests.quota.usage import Meter, rollups_match_records

PLANS = ["free-tier", "base-plus-usage", "usage-only"]
TIERS = ["small", "medium", "large", "gpu"]

use = st.tuples(
    st.just("use"),
    st.sampled_from(TIERS),
    st.integers(min_value=1, max_value=4000),  # minutes
    st.integers(min_value=0, max_value=12_000),  # idle minutes before
    st.booleans(),  # one allocation per draft, or the whole run at once
)
switch = st.tuples(st.just("switch"), st.sampled_from(PLANS), st.just(0), st.just(0), st.just(0))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first_plan=st.sampled_from(PLANS),
    steps=st.lists(st.one_of(use, switch), min_size=1, max_size=20),
)
def test_allocation_and_rollups_hold_for_any_usage_and_plan_switches(
    rollback_runtime: Runtime,
    first_plan: str,
    steps: list[tuple[str, str, int, int, bool]],
) -> None:
    runtime = rollback_runtime
    catalog = runtime.catalog
    with runtime.session() as s:  # a fresh org per example; the database is shared
        org = account_service.create_org(
            s, name="Acme", billing_emails=["ops@acme.test"], plan_id=first_plan,
            catalog=catalog, now=runtime.clock.now(),
        )  # fmt: skip
    meter = Meter(runtime, org.id)
    plan = catalog.plan(first_plan)
    used: dict[datetime, int] = defaultdict(int)  # reference model: allowance used per period
    cursor = T0
    for kind, name, minutes, gap, one_by_one in steps:
        if kind == "switch":
            with runtime.session() as s:
                account_service.set_plan(
                    s, account_service.get_org(s, org.id), name, catalog=catalog, at=cursor
                )
            plan = catalog.plan(name)
            continue
        cursor += timedelta(minutes=gap)
        drafts = meter.drafts(name, cursor, minutes)
        cursor += timedelta(minutes=minutes)
        rows = (
            [row for d in drafts for row in meter.record([d])]
            if one_by_one
            else meter.record(drafts)
        )
        weight = catalog.tier(name).small_hour_weight
        assert sum(r["minutes"] for r in rows) == minutes
        for draft, r in zip(drafts, rows, strict=True):
            assert r["minutes"] == draft.minutes == r["included_minutes"] + r["overage_minutes"]
            assert r["small_minutes"] == r["included_minutes"] * weight
            assert r["billable_minutes"] == (r["overage_minutes"] if plan.bills_overage else 0)
            assert r["plan_id"] == plan.id
            # In record order, each takes what is left, in whole minutes of its tier.
            left = max(0, plan.included_small_minutes - used[r["period_start"]])
            assert r["included_minutes"] == min(r["minutes"], left // weight)
            used[r["period_start"]] += r["small_minutes"]
            if r["small_minutes"]:
                assert used[r["period_start"]] <= plan.included_small_minutes
        rollups_match_records(runtime, org.id)

    # The status read from rollups equals the same figures recomputed from the records.
    with runtime.session() as s:
        org_row = account_service.get_org(s, org.id)
        status = quota_service.status(s, org_row, catalog=catalog, now=cursor)
        sums = {
            tier: (int(m), int(b))
            for tier, m, b in s.execute(
                select(
                    UsageRecord.tier,
                    func.sum(UsageRecord.minutes),
                    func.sum(UsageRecord.billable_minutes),
                )
                .where(
                    UsageRecord.org_id == org.id,
                    UsageRecord.period_start == status.period.start,
                )
                .group_by(UsageRecord.tier)
            )
        }
    lines = {t.tier: (t.minutes, t.billable_minutes) for t in status.tiers if t.minutes}
    assert lines == sums
    expected = plan.monthly_base + sum(
        (minutes_cost(b, catalog.tier(t).hourly_rate) for t, (_, b) in sums.items()),
        start=ZERO,
    )
    assert status.estimate == expected
    weighted = sum(m * catalog.tier(t).small_hour_weight for t, (m, _) in sums.items())
    assert status.weighted_minutes == weighted
    assert status.percent_used >= 0 and (plan.included_small_minutes or status.percent_used == 0)
