"""Allowance in small-hours, overage, tier lines and the estimate (docs/spec.md §1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.metering.service import metering_service
from orzbob.quota.models import QuotaPeriod
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, without_time_caps
from tests.quota.usage import Meter, records, rollups_match_records, run


@pytest.fixture
def catalog() -> Catalog:
    # These tests run one instance for days: the time caps are tested in tests/throttle.
    return without_time_caps(default_catalog())


HOUR = 3600


def billing(client: TestClient, org: OrgHandle) -> dict:  # type: ignore[type-arg]
    r = client.get("/v1/billing", headers=org.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def tier(body: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(t for t in body["tiers"] if t["tier"] == name)  # type: ignore[no-any-return]


def test_the_pricing_example_is_25_83(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "small", 230 * HOUR)
    run(client, runtime, org, "medium", 20 * HOUR)
    body = billing(client, org)
    small, medium = tier(body, "small"), tier(body, "medium")
    assert (small["included_minutes"], small["overage_minutes"]) == (200 * 60, 30 * 60)
    assert (medium["included_minutes"], medium["overage_minutes"]) == (0, 20 * 60)
    assert (small["cost"], medium["cost"]) == ("2.49", "3.34")
    assert body["estimate"] == {
        "base": "20.00",
        "usage": "5.83",
        "credits_applied": "0.00",
        "total": "25.83",
    }
    assert body["estimated_bill"] == 25.83
    assert body["hours_used"] == 270.0 and body["percent_used"] == 135.0
    assert body["in_overage"] is True
    rollups_match_records(runtime, org.id)


def test_a_gpu_hour_uses_25_small_hours_of_allowance(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "gpu", HOUR)
    body = billing(client, org)
    gpu = tier(body, "gpu")
    assert (gpu["minutes"], gpu["included_minutes"], gpu["small_minutes"]) == (60, 60, 25 * 60)
    assert body["hours_used"] == 25.0 and body["percent_used"] == 12.5
    assert body["estimated_bill"] == 20.0 and body["in_overage"] is False


def test_a_record_straddling_the_allowance_is_split_exactly(
    runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    meter = Meter(runtime, org.id)
    t = T0
    meter.use("small", t, 11_970)  # 30 small-minutes of allowance left
    # 20 medium minutes need 40: the first 15 fit whole, the rest is overage.
    (medium,) = meter.use("medium", t + timedelta(minutes=11_970), 20)
    assert (medium["included_minutes"], medium["overage_minutes"]) == (15, 5)
    assert (medium["small_minutes"], medium["billable_minutes"]) == (30, 5)
    # Nothing is left: the next minute of anything is overage.
    (small,) = meter.use("small", t + timedelta(minutes=12_000), 1)
    assert (small["included_minutes"], small["overage_minutes"]) == (0, 1)
    rollups_match_records(runtime, org.id)


def test_a_gpu_minute_that_does_not_fit_whole_is_overage_and_the_rest_stays(
    runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    meter = Meter(runtime, org.id)
    meter.use("small", T0, 11_960)  # 40 small-minutes left
    (gpu,) = meter.use("gpu", T0 + timedelta(minutes=11_960), 3)
    assert (gpu["included_minutes"], gpu["overage_minutes"], gpu["small_minutes"]) == (1, 2, 25)
    # The 15 small-minutes a gpu minute cannot use are still there for small.
    (small,) = meter.use("small", T0 + timedelta(minutes=11_963), 20)
    assert (small["included_minutes"], small["overage_minutes"]) == (15, 5)


def test_a_real_run_across_the_allowance_is_split_inside_one_record(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "small", 201 * HOUR)
    rows = records(runtime, org.id)
    assert sum(r.minutes for r in rows) == 201 * 60
    assert all(r.minutes == r.included_minutes + r.overage_minutes for r in rows)
    (straddling,) = [r for r in rows if r.included_minutes and r.overage_minutes]
    before = sum(r.included_minutes for r in rows if r.interval_end <= straddling.interval_start)
    assert straddling.included_minutes == 12_000 - before
    assert sum(r.overage_minutes for r in rows) == 60


def test_in_overage_turns_true_at_200_hours_and_one_minute_not_before(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "small", 200 * HOUR - 60)
    body = billing(client, org)
    assert (body["in_overage"], body["hours_used"], body["percent_used"]) == (False, 199.98, 99.99)
    run(client, runtime, org, "small", 60)
    body = billing(client, org)
    assert (body["in_overage"], body["hours_used"], body["percent_used"]) == (False, 200.0, 100.0)
    assert body["estimated_bill"] == 20.0
    run(client, runtime, org, "small", 60)
    body = billing(client, org)
    assert (body["in_overage"], body["hours_used"]) == (True, 200.01)
    assert tier(body, "small")["billable_minutes"] == 1
    assert body["estimated_bill"] == 20.0  # one minute is $0.0014: rounds to nothing
    run(client, runtime, org, "small", 59 * 60)
    body = billing(client, org)
    assert (body["hours_used"], body["estimated_bill"]) == (201.0, 20.08)
    assert body["throttle_status"] == "none"  # overage is billed, not stopped


def test_usage_only_includes_nothing_and_bills_every_minute(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="usage-only")
    body = billing(client, org)
    assert (body["hours_used"], body["hours_included"], body["percent_used"]) == (0, 0, 0)
    assert (body["in_overage"], body["estimated_bill"]) == (False, 0.0)
    run(client, runtime, org, "large", 10 * HOUR)
    body = billing(client, org)
    assert (body["hours_used"], body["hours_included"], body["percent_used"]) == (40.0, 0, 0)
    assert body["in_overage"] is False
    assert tier(body, "large")["billable_minutes"] == 600
    assert body["estimated_bill"] == 3.33
    assert body["forecast"]["allowance_runs_out_at"] is None


def test_free_tier_bills_nothing_and_reports_quota_exhausted(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()  # free-tier
    run(client, runtime, org, "small", 9 * HOUR)
    body = billing(client, org)
    assert (body["plan"], body["throttle_status"], body["percent_used"]) == (
        "Free Tier",
        "none",
        90,
    )
    run(client, runtime, org, "small", HOUR)
    body = billing(client, org)
    assert body["throttle_status"] == "quota_exhausted"
    (cap,) = body["throttles"]
    assert cap["cap"] == "quota_exhausted" and cap["lifts_at"] == body["reset_date"]
    assert body["in_overage"] is False  # used up exactly, not past it
    # The hard stop: nothing more runs this period, so nothing past the allowance exists.
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 409 and r.json()["error"] == "quota_exhausted"
    small = tier(billing(client, org), "small")
    assert (small["minutes"], small["overage_minutes"], small["cost"]) == (600, 0, "0.00")


def test_period_rows_the_session_holds_show_what_allocation_wrote(
    runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    """Allocation locks and writes period rows as plain values; a period row the same
    session already holds as an object (a plan change reads it after recording usage up
    to the change) must show the new values, not the ones it was loaded with."""
    org = make_org(plan="base-plus-usage")
    meter = Meter(runtime, org.id)
    meter.use("small", T0, 11_990)  # the period row exists; 10 small-minutes left
    drafts = meter.drafts("small", T0 + timedelta(minutes=11_990), 30)
    with runtime.session() as s:
        held = s.scalars(select(QuotaPeriod).where(QuotaPeriod.org_id == org.id)).one()
        assert (held.used_small_minutes, held.exhausted_at) == (11_990, None)
        metering_service.record(
            s, account_service.get_org(s, org.id), drafts, catalog=runtime.catalog, now=T0
        )
        assert held.used_small_minutes == 12_000
        assert held.exhausted_at == T0 + timedelta(minutes=12_000)
        assert held not in s.dirty  # shown as the database holds it: nothing to write back
    rollups_match_records(runtime, org.id)
