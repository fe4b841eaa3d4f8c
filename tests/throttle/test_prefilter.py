"""The checkpoint's limiter computes exact cuts only for orgs that may be at a cap by `now`.
Its prefilter must be conservative: for every batch, late or not, it gives what the exact
computation over every org gives."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from orzbob.throttle.service import Cut, throttle_service
from orzbob.throttle.tasks import sweep_caps
from tests.conftest import T0, OrgHandle, advance
from tests.throttle.support import beat, recorded_minutes, start


@pytest.fixture
def catalog() -> Catalog:
    # Caps within a few hours: a 1-hour free allowance, a 2-hour run, 2 instance-hours a day.
    plans = tuple(
        p.model_copy(
            update={
                "continuous_cap_hours": 2,
                "daily_cap_instance_hours": 2,
                "included_small_hours": min(p.included_small_hours, 1),
            }
        )
        for p in default_catalog().plans
    )
    return default_catalog().model_copy(update={"plans": plans})


def test_the_prefilter_drops_only_orgs_that_no_cap_can_reach(
    runtime: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    runtime.settings.heartbeat_timeout_seconds = 10**6
    free = make_org(name="free")  # hard stop after 60 small-minutes
    capped = make_org(name="capped", plan="usage-only")  # a $1.00 spend limit: 15 min
    rich = make_org(name="rich", plan="usage-only")  # a $1,000 spend limit, never near
    daily = make_org(name="daily", plan="base-plus-usage")  # 3 instances: 2 h in 40 min
    idle = make_org(name="idle", plan="base-plus-usage")  # beats without activity
    long = make_org(name="long", plan="usage-only")  # the 2-hour continuous cap
    # A gpu instance keeps running after its org moves to the free tier (small only): the
    # allowance runs out at the gpu's weight, not at the plan's tiers' weights.
    downgraded = make_org(name="downgraded", plan="base-plus-usage")
    gpu = start(client, downgraded, "gpu")
    with runtime.session() as s:
        row = account_service.get_org(s, downgraded.id, lock=True)
        account_service.set_plan(s, row, "free-tier", catalog=runtime.catalog, at=T0)
    client.put("/v1/billing/spend-limit", headers=capped.headers, json={"amount": "1.00"})
    client.put("/v1/billing/spend-limit", headers=rich.headers, json={"amount": "1000.00"})
    fleet = [
        (free, [start(client, free) for _ in range(2)]),
        (capped, [start(client, capped, "gpu") for _ in range(2)]),
        (rich, [start(client, rich, "medium")]),
        (daily, [start(client, daily) for _ in range(3)]),
        (idle, [start(client, idle)]),
        (long, [start(client, long)]),
        (downgraded, [gpu]),
    ]
    dropped = exact_cuts = 0
    for _ in range(40):  # 160 minutes, every instance beating every 4 minutes
        advance(runtime, 240)
        for org, iids in fleet:
            for iid in iids:
                beat(client, org, iid, active=org is not idle)
        with runtime.session() as s:
            orgs = [account_service.get_org(s, o.id) for o, _ in fleet]
            # As the checkpoint would see it now, or running late (a large uncounted stretch).
            for late in (0, 7, 45):
                at = runtime.clock.now() + timedelta(minutes=late)
                fast = throttle_service.limits(s, orgs, runtime.catalog, at, {})
                cuts = throttle_service.cuts(s, orgs, catalog=runtime.catalog, now=at)
                assert fast == {seg: cut.at for seg, cut in cuts.items()}, late
                exact_cuts += len(cuts)
                kept = throttle_service._may_reach_a_cap(s, orgs, runtime.catalog, at)
                dropped += len(orgs) - len(kept)
            s.rollback()
    # The comparison was not vacuous: caps were met, and orgs were left out.
    assert exact_cuts > 0 and dropped > 0
    r = client.get("/v1/instances", headers=rich.headers).json()
    assert [i["reason"] for i in r] == ["continuous_cap"]  # never its spend limit


def test_the_sweep_rule_planned_for_its_values_is_never_prepared(
    runtime: Runtime, is_postgres: bool
) -> None:
    """`custom_plan` sends the statement unprepared however often it runs (so PostgreSQL
    plans each call for its values), and leaves psycopg preparing the transaction's other
    statements as usual; without it, the statement is prepared after five runs."""
    if not is_postgres:
        pytest.skip("PostgreSQL's prepared statements")
    from sqlalchemy import text

    from orzbob.throttle.repository import throttle_repository

    prepared = text("SELECT statement FROM pg_prepared_statements")
    runtime.engine.dispose()  # a new connection: none of the sweep's earlier runs on it
    with runtime.session() as s:
        driver = s.connection().connection.driver_connection
        threshold = driver.prepare_threshold  # type: ignore[union-attr]
        assert threshold is not None
        before = set(s.scalars(prepared))
        for _ in range(threshold + 2):
            throttle_repository.sweep_candidates(
                s, catalog=runtime.catalog, now=T0, margin_minutes=1, org_ids=[], custom_plan=True
            )
        assert set(s.scalars(prepared)) == before
        assert driver.prepare_threshold == threshold  # type: ignore[union-attr]
        for _ in range(threshold + 2):
            throttle_repository.sweep_candidates(
                s, catalog=runtime.catalog, now=T0, margin_minutes=1, org_ids=[]
            )
        new = set(s.scalars(prepared)) - before
        assert len(new) == 1 and "daily_usage" in new.pop()


@pytest.mark.parametrize("way", ["bulk", "single"])
@pytest.mark.parametrize("jobs", [True, False], ids=["worker", "worker-behind"])
def test_spend_limited_orgs_far_from_their_limit_cost_no_exact_computation(
    way: str,
    jobs: bool,
    runtime: Runtime,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Heartbeats (bulk or single), the checkpoint and the sweep bound a spend-limited org's
    bill before they compute its caps exactly (about 10 ms an org): an org far from its
    limit never gets the exact computation, one that reaches its limit is paused at it,
    whether the worker checkpoints and sweeps every minute or has fallen behind (the beats
    alone then)."""
    runtime.settings.heartbeat_timeout_seconds = 10**6
    rich = make_org(name="rich", plan="usage-only")  # a $1,000 spend limit, never near
    capped = make_org(name="capped", plan="usage-only")  # $1.00: the 29th gpu minute
    client.put("/v1/billing/spend-limit", headers=rich.headers, json={"amount": "1000.00"})
    client.put("/v1/billing/spend-limit", headers=capped.headers, json={"amount": "1.00"})
    fleet = [(rich, start(client, rich, "medium")), (capped, start(client, capped, "gpu"))]
    computed: set[uuid.UUID] = set()
    exact = throttle_service.cuts

    def counted(session: Session, orgs: Sequence[Org], **kw: Any) -> dict[uuid.UUID, Cut]:
        computed.update(o.id for o in orgs)
        return exact(session, orgs, **kw)

    monkeypatch.setattr(throttle_service, "cuts", counted)
    for _ in range(40):
        advance(runtime, 60)
        for org, iid in fleet:
            if way == "single":
                beat(client, org, iid)
                continue
            r = client.post(
                "/v1/heartbeats",
                headers=org.headers,
                json={"beats": [{"instance_id": iid, "active": True, "source": "ide"}]},
            )
            assert r.status_code == 200, r.text
        if jobs:  # the worker's minute: the checkpoint, then the sweep
            checkpoint_open_segments(runtime)
            sweep_caps(runtime)
    states = {
        org.name: client.get(f"/v1/instances/{iid}", headers=org.headers).json()
        for org, iid in fleet
    }
    assert (states["rich"]["state"], states["rich"]["reason"]) == ("running", None)
    assert (states["capped"]["state"], states["capped"]["reason"]) == ("paused", "spend_limit")
    assert recorded_minutes(runtime, fleet[1][1]) == 29
    assert rich.id not in computed
    assert capped.id in computed
