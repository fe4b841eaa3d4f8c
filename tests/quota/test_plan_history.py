"""A plan change never rewrites a closed period (defect 5) and recomputes the current
period's exhaustion under the new plan (defect 6)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.quota.models import QuotaPeriod
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, without_time_caps
from tests.quota.usage import move_clock_to, run, set_plan


@pytest.fixture
def catalog() -> Catalog:
    # Runs of many hours: the time caps are tested in tests/throttle.
    return without_time_caps(default_catalog())


def current_period(runtime: Runtime, org: OrgHandle) -> QuotaPeriod:
    with runtime.session() as s:
        rows = s.scalars(
            select(QuotaPeriod)
            .where(QuotaPeriod.org_id == org.id)
            .order_by(QuotaPeriod.period_start.desc())
        ).all()
        return rows[0]


def test_a_closed_period_keeps_its_base_after_a_plan_change(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")  # $20 base; periods start on the 10th
    r = client.post(
        f"/v1/admin/orgs/{org.id}/credits",
        headers=staff_headers("support_l2"),
        json={"amount": "30.00", "reason": "outage"},
    )
    assert r.status_code == 201
    # March has no usage (so no quota-period row): its $20 base absorbs $20 of the credit.
    move_clock_to(runtime, datetime(2026, 4, 11, tzinfo=UTC))
    before = client.get("/v1/billing", headers=org.headers).json()["credits"]
    assert before["carried_in"] == "10.00"
    set_plan(client, org, "usage-only", staff_headers("engineering"))
    after = client.get("/v1/billing", headers=org.headers).json()["credits"]
    assert after["carried_in"] == "10.00"
    move_clock_to(runtime, datetime(2026, 5, 11, tzinfo=UTC))
    set_plan(client, org, "base-plus-usage", staff_headers("engineering"))
    # April ran on usage-only ($0 base) with no usage: the $10 carries on into May.
    assert client.get("/v1/billing", headers=org.headers).json()["credits"]["carried_in"] == (
        "10.00"
    )


def test_upgrading_an_exhausted_free_tier_clears_the_run_out_moment(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org()  # free tier: 10 small-hours
    run(client, runtime, org, "small", 11 * 3600)
    assert current_period(runtime, org).exhausted_at is not None
    set_plan(client, org, "base-plus-usage", staff_headers("engineering"))
    assert current_period(runtime, org).exhausted_at is None
    body = client.get("/v1/billing", headers=org.headers).json()
    runs_out = datetime.fromisoformat(body["forecast"]["allowance_runs_out_at"])
    assert runs_out > runtime.clock.now()  # a projection under the new allowance


def test_downgrading_past_the_new_allowance_marks_the_change_as_the_run_out(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "small", 11 * 3600)
    assert current_period(runtime, org).exhausted_at is None
    set_plan(client, org, "free-tier", staff_headers("engineering"))
    assert current_period(runtime, org).exhausted_at == runtime.clock.now()
