"""Defect 1: a deleted org never blocks the heartbeat-timeout sweep, and a late heartbeat
never bills the time after a timeout that should have fired."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from orzbob.accounts.models import Org
from orzbob.instances.models import Instance
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance


def minutes_of(runtime: Runtime, iid: str) -> int:
    with runtime.session() as s:
        return int(
            s.scalar(
                select(func.coalesce(func.sum(UsageRecord.minutes), 0)).where(
                    UsageRecord.instance_id == uuid.UUID(iid)
                )
            )
        )


def instance(runtime: Runtime, iid: str) -> Instance:
    with runtime.session() as s:
        found = s.get(Instance, uuid.UUID(iid))
        assert found is not None
        return found


def start(client: TestClient, org: OrgHandle) -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_deleting_an_org_stops_its_instances_and_closes_their_usage(
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[..., dict[str, str]],
) -> None:
    runtime = with_jobs
    org = make_org()
    iid = start(client, org)
    advance(runtime, 90)
    client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    r = client.delete(f"/v1/admin/orgs/{org.id}", headers=staff_headers())
    assert r.status_code == 204
    inst = instance(runtime, iid)
    assert (inst.state, inst.reason) == ("stopped", "admin")
    assert minutes_of(runtime, iid) == 2
    with runtime.session() as s:
        assert s.scalar(select(UsageSegment).where(UsageSegment.ended_at.is_(None))) is None
    advance(runtime, 3 * 3600)
    assert minutes_of(runtime, iid) == 2


def test_an_orphaned_instance_never_blocks_the_sweep_for_other_orgs(
    client: TestClient, with_jobs: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    runtime = with_jobs
    gone, alive = make_org("Gone"), make_org("Alive", email="a@alive.test")
    orphan, other = start(client, gone), start(client, alive)
    advance(runtime, 60)
    for org, iid in ((gone, orphan), (alive, other)):
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    # An org deleted before deleting stopped instances (or by hand) left this one running.
    with runtime.session() as s:
        s.execute(update(Org).where(Org.id == gone.id).values(deleted_at=runtime.clock.now()))
    advance(runtime, 3 * 3600)
    assert instance(runtime, other).reason == "heartbeat_timeout"
    assert instance(runtime, orphan).reason == "heartbeat_timeout"
    assert minutes_of(runtime, other) == 1
    assert minutes_of(runtime, orphan) == 1


def test_a_late_heartbeat_never_bills_the_gap_after_a_missed_timeout(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    # No jobs run: the sweep is late (down, or behind). The agent comes back 3 hours later.
    org = make_org(plan="base-plus-usage")
    iid = start(client, org)
    advance(runtime, 60)
    client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    advance(runtime, 3 * 3600)
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["reason"]) == ("stopped", "heartbeat_timeout")
    from orzbob.metering.tasks import checkpoint_open_segments

    checkpoint_open_segments(runtime)
    assert minutes_of(runtime, iid) == 1
