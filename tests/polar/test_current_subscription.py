"""Which subscription is current (defect 2), and a scheduled plan change as a usage boundary
(defect 7)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.api.app import create_app
from orzbob.metering.models import UsageRecord
from orzbob.polar.models import ScheduledPlanChange
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, advance
from tests.polar.support import envelope, org_row, signed_headers, subscription, use_billing

DAY = 86400


@pytest.fixture
def hooks(runtime: Runtime) -> Iterator[TestClient]:
    from orzbob.jobs import register_jobs

    use_billing(runtime, "http://127.0.0.1:9")
    register_jobs(runtime)
    # Nothing listens on port 9: usage stays pending, without waiting on retries.
    assert runtime.flusher is not None
    runtime.flusher.sleep = lambda _seconds: None
    with TestClient(create_app(runtime)) as c:
        yield c


def send(c: TestClient, event_type: str, data: dict) -> str:  # type: ignore[type-arg]
    body = envelope(event_type, data)
    r = c.post("/v1/webhooks/polar", content=body, headers=signed_headers(body))
    assert r.status_code in (200, 202), r.text
    return str(r.json()["status"])


def pending(runtime: Runtime) -> list[ScheduledPlanChange]:
    with runtime.session() as s:
        return list(
            s.scalars(
                select(ScheduledPlanChange).where(
                    ScheduledPlanChange.applied_at.is_(None),
                    ScheduledPlanChange.canceled_at.is_(None),
                )
            )
        )


def test_events_for_a_replaced_subscription_never_take_the_org_back(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    old_start, new_start = T0 - timedelta(days=10), T0 - timedelta(days=1)
    assert send(hooks, "subscription.active", subscription(org.id, start=old_start)) == (
        "processed"
    )
    new = subscription(org.id, start=new_start, sub_id="sub_new", plan="usage-only")
    assert send(hooks, "subscription.active", new) == "processed"
    # The customer moved; sub_old is canceled at its period end and is still `active`.
    canceled_old = subscription(org.id, start=old_start, cancel_at_period_end=True)
    assert send(hooks, "subscription.canceled", canceled_old) == "ignored"
    # A replay of an older event for sub_old changes nothing either.
    assert send(hooks, "subscription.updated", subscription(org.id, start=old_start)) == ("ignored")
    row = org_row(runtime, org.id)
    assert (row.plan_id, row.polar_subscription_id) == ("usage-only", "sub_new")
    assert row.subscription_period_start == new_start
    assert pending(runtime) == []
    advance(runtime, 25 * DAY)  # past sub_old's period end
    row = org_row(runtime, org.id)
    assert (row.plan_id, row.polar_subscription_id) == ("usage-only", "sub_new")
    # Once the current subscription ends and the org is back on the free tier, an old
    # subscription's replayed event still does not bring its plan back.
    ended = subscription(org.id, start=new_start, sub_id="sub_new", status="canceled",
                         plan="usage-only", ended_at=runtime.clock.now())  # fmt: skip
    assert send(hooks, "subscription.revoked", ended) == "processed"
    advance(runtime, 10 * DAY)
    assert org_row(runtime, org.id).plan_id == "free-tier"
    assert send(hooks, "subscription.updated", subscription(org.id, start=old_start)) == ("ignored")
    assert org_row(runtime, org.id).plan_id == "free-tier"
    # A newer subscription is adopted.
    newest = subscription(org.id, start=runtime.clock.now(), sub_id="sub_3")
    assert send(hooks, "subscription.active", newest) == "processed"
    assert org_row(runtime, org.id).plan_id == "base-plus-usage"


def test_minutes_after_a_scheduled_change_are_recorded_under_the_new_plan(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    start = T0 - timedelta(days=5) + timedelta(seconds=30)  # ends between two job ticks
    end = start + timedelta(days=30)
    send(hooks, "subscription.active", subscription(org.id, start=start))
    send(
        hooks, "subscription.canceled", subscription(org.id, start=start, cancel_at_period_end=True)
    )
    advance(runtime, (end - T0).total_seconds() - 300)
    r = hooks.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    iid = r.json()["id"]
    for _ in range(30):  # an agent beating every 20 s, across the end of the period
        advance(runtime, 20)
        hooks.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    hooks.delete(f"/v1/instances/{iid}", headers=org.headers)
    assert org_row(runtime, org.id).plan_id == "free-tier"
    with runtime.session() as s:
        rows = list(s.scalars(select(UsageRecord).order_by(UsageRecord.interval_start)))
    assert sum(r.minutes for r in rows) == 10
    before = {r.plan_id for r in rows if r.interval_end <= end}
    after = {r.plan_id for r in rows if r.interval_start >= end}
    assert (before, after) == ({"base-plus-usage"}, {"free-tier"})
    assert all(r.interval_end <= end or r.interval_start >= end for r in rows)
