"""Plan changes mid-period: the new plan's rules apply from now; used minutes stay used."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance, without_time_caps
from tests.quota.usage import records, rollups_match_records, run, set_plan


@pytest.fixture
def catalog() -> Catalog:
    # These tests run one instance for days: the time caps are tested in tests/throttle.
    return without_time_caps(default_catalog())


HOUR = 3600


def test_upgrading_from_free_keeps_used_minutes_and_opens_the_new_allowance(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org()  # free-tier: 10 small-hours, hard stop
    run(client, runtime, org, "small", 11 * HOUR)  # the hard stop pauses it at 10 h
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["throttle_status"] == "quota_exhausted" and body["estimated_bill"] == 0.0
    assert body["hours_used"] == 10.0

    set_plan(client, org, "base-plus-usage", staff_headers("support_l2"))
    body = client.get("/v1/billing", headers=org.headers).json()
    assert (body["plan"], body["hours_included"], body["throttle_status"]) == (
        "Base + Usage",
        200,
        "none",
    )
    # The allowance left is 200 h minus the 10 h the free tier included.
    assert (body["hours_used"], body["in_overage"], body["estimated_bill"]) == (10.0, False, 20.0)
    assert body["tiers"][0]["included_minutes"] == 600

    run(client, runtime, org, "small", 190 * HOUR)
    body = client.get("/v1/billing", headers=org.headers).json()
    small = body["tiers"][0]
    assert (small["included_minutes"], small["overage_minutes"]) == (12_000, 0)
    assert small["billable_minutes"] == 0 and body["estimated_bill"] == 20.0
    run(client, runtime, org, "small", 60)
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["in_overage"] is True and body["tiers"][0]["billable_minutes"] == 1
    plans = {r.plan_id for r in records(runtime, org.id) if r.included_minutes}
    assert plans == {"free-tier", "base-plus-usage"}
    rollups_match_records(runtime, org.id)


def test_moving_to_usage_only_bills_from_then_on_and_keeps_what_was_included(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "medium", 10 * HOUR)
    set_plan(client, org, "usage-only", staff_headers("engineering"))
    run(client, runtime, org, "medium", 10 * HOUR)
    body = client.get("/v1/billing", headers=org.headers).json()
    medium = body["tiers"][1]
    assert (medium["included_minutes"], medium["billable_minutes"]) == (600, 600)
    assert (body["hours_included"], body["percent_used"], body["in_overage"]) == (0, 0, False)
    assert body["estimate"]["base"] == "0.00" and body["estimated_bill"] == 1.67


def test_allocation_reads_the_plan_when_the_record_is_written(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="usage-only")
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    for _ in range(6 * 15):  # an agent beating every 4 minutes for 6 hours
        advance(runtime, 240)
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    checkpoint_open_segments(runtime)  # 6 h recorded on usage-only: every minute billed
    set_plan(client, org, "base-plus-usage", staff_headers("engineering"))
    advance(runtime, HOUR)
    client.delete(f"/v1/instances/{iid}", headers=org.headers)
    rows = records(runtime, org.id)
    before = [r for r in rows if r.plan_id == "usage-only"]
    base = [r for r in rows if r.plan_id == "base-plus-usage"]
    assert sum(r.minutes for r in before) == 6 * 60
    assert sum(r.billable_minutes for r in before) == 6 * 60
    # The hour recorded after the upgrade is included under the new plan's allowance.
    assert [(r.minutes, r.included_minutes) for r in base] == [(60, 60)]
    audit = client.get(
        "/v1/admin/audit", headers=staff_headers("support_l1"), params={"org": str(org.id)}
    ).json()["entries"]
    assert [(e["action"], e["details"]) for e in audit] == [
        ("plan.change", {"from": "usage-only", "to": "base-plus-usage"})
    ]
