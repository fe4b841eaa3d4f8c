"""Which subscription is current (defect 2), and a scheduled plan change as a usage boundary
(defect 7)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.api.app import create_app
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.metering.models import UsageRecord
from orzbob.polar.models import ScheduledPlanChange
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, advance
from tests.polar.support import envelope, org_row, signed_headers, subscription, use_billing

DAY = 86400


@pytest.fixture
def catalog() -> Catalog:
    # A 1-hour continuous cap, so that a cap can fall just after a plan change quickly.
    plans = tuple(p.model_copy(update={"continuous_cap_hours": 1}) for p in default_catalog().plans)
    return default_catalog().model_copy(update={"plans": plans})


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


def _running_across_the_change(
    hooks: TestClient, runtime: Runtime, org: OrgHandle
) -> tuple[str, datetime]:
    """An instance running, beating every 20 s, from 4 min 55 s before a scheduled change
    falls due until 25 s after, 5 s before the job that applies it runs (jobs tick every
    60 s, the change falls 30 s after a tick). Its fifth minute ends 5 s after the change, so
    the run's sixth minute is wholly after it. Returns the instance id and the change."""
    start = T0 - timedelta(days=5) + timedelta(seconds=30)
    end = start + timedelta(days=30)
    send(hooks, "subscription.active", subscription(org.id, start=start))
    send(
        hooks, "subscription.canceled", subscription(org.id, start=start, cancel_at_period_end=True)
    )
    advance(runtime, (end - T0).total_seconds() - 295)
    iid = hooks.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    for _ in range(16):
        advance(runtime, 20)
        hooks.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert runtime.clock.now() == end + timedelta(seconds=25)
    assert org_row(runtime, org.id).plan_id == "base-plus-usage"  # the job has not run yet
    return iid, end


def _plans_around(runtime: Runtime, end: datetime) -> tuple[set[str], set[str], int]:
    with runtime.session() as s:
        rows = list(s.scalars(select(UsageRecord).order_by(UsageRecord.interval_start)))
    assert all(r.interval_end <= end or r.interval_start >= end for r in rows)
    before = {r.plan_id for r in rows if r.interval_end <= end}
    after = {r.plan_id for r in rows if r.interval_start >= end}
    return before, after, sum(r.minutes for r in rows)


@pytest.mark.parametrize("close", ["pause", "stop"])
def test_a_user_close_after_a_change_fell_due_records_the_new_plan_past_it(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], close: str
) -> None:
    """The close path applies a due change first: the minute after the change is never
    recorded under the old plan, even before the plan-change job has run."""
    org = make_org()
    iid, end = _running_across_the_change(hooks, runtime, org)
    if close == "pause":
        r = hooks.post(f"/v1/instances/{iid}/pause", headers=org.headers)
    else:
        r = hooks.delete(f"/v1/instances/{iid}", headers=org.headers)
    assert r.status_code == 200, r.text
    assert org_row(runtime, org.id).plan_id == "free-tier"
    assert pending(runtime) == []
    # 4 min 55 s before the change (5 minutes, the last one ending 5 s after it), then the
    # sixth minute under the new plan.
    assert _plans_around(runtime, end) == ({"base-plus-usage"}, {"free-tier"}, 6)


def test_deleting_an_org_after_a_change_fell_due_records_the_new_plan_past_it(
    hooks: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[..., dict[str, str]],
) -> None:
    """The deletion stops the org's instances after applying its due change."""
    org = make_org()
    _, end = _running_across_the_change(hooks, runtime, org)
    assert hooks.delete(f"/v1/admin/orgs/{org.id}", headers=staff_headers()).status_code == 204
    assert _plans_around(runtime, end) == ({"base-plus-usage"}, {"free-tier"}, 6)


def test_a_silent_instance_stopped_after_a_change_fell_due_records_the_new_plan_past_it(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    """The heartbeat-timeout sweep applies the due change before it closes usage."""
    from orzbob.instances.sweeps import sweep_service

    org = make_org()
    iid, end = _running_across_the_change(hooks, runtime, org)
    now = runtime.clock.now() + timedelta(seconds=400)  # silent past the timeout
    with runtime.session() as s:
        stopped = sweep_service.stop_if_silent(
            s,
            uuid.UUID(iid),
            now=now,
            timeout=timedelta(seconds=runtime.settings.heartbeat_timeout_seconds),
            catalog=runtime.catalog,
        )
    assert stopped
    assert org_row(runtime, org.id).plan_id == "free-tier"
    assert _plans_around(runtime, end) == ({"base-plus-usage"}, {"free-tier"}, 6)


def test_a_cap_reached_after_a_change_fell_due_is_enforced_under_the_new_plan(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    """A heartbeat holds its instance locked, so it cannot apply the org's due change (org
    before instance): it leaves the pause to the cap sweep, which applies the change first,
    then pauses at the cap's moment. No minute past the cap is recorded meanwhile."""
    from orzbob.throttle.service import throttle_service

    org = make_org()
    start = T0 - timedelta(days=5) + timedelta(seconds=30)
    end = start + timedelta(days=30)
    send(hooks, "subscription.active", subscription(org.id, start=start))
    send(
        hooks, "subscription.canceled", subscription(org.id, start=start, cancel_at_period_end=True)
    )
    # The (1-hour, see `catalog`) continuous cap falls 20 s after the change.
    advance(runtime, (end - T0).total_seconds() - 3600 + 20)
    iid = hooks.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    beat = f"/v1/instances/{iid}/heartbeat"
    for _ in range(60 // 4):
        advance(runtime, 240)
        assert hooks.post(beat, headers=org.headers, json={"active": True}).status_code == 200
    advance(runtime, 5)
    assert runtime.clock.now() == end + timedelta(seconds=25)
    r = hooks.post(beat, headers=org.headers, json={"active": True})
    assert (r.status_code, r.json()["state"], r.json()["notice"]) == (200, "running", None)
    with runtime.session() as s:
        paused = throttle_service.enforce(
            s, org.id, catalog=runtime.catalog, now=runtime.clock.now()
        )
    assert [str(i.id) for i in paused] == [iid]
    assert org_row(runtime, org.id).plan_id == "free-tier"
    r = hooks.get(f"/v1/instances/{iid}", headers=org.headers)
    assert (r.json()["state"], r.json()["reason"]) == ("paused", "continuous_cap")
    # The cap's minute straddles the change, so all 60 are under the old plan.
    assert _plans_around(runtime, end) == ({"base-plus-usage"}, set(), 60)
