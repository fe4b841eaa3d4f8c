from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.instances.models import InstanceEvent
from orzbob.instances.service import instance_service
from orzbob.kit.errors import OrzbobError
from orzbob.metering.models import UsageSegment
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance


def test_lifecycle_over_http(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small", "name": "dev"})
    assert r.status_code == 201
    inst = r.json()
    assert (inst["state"], inst["name"], inst["tier"]) == ("running", "dev", "small")
    iid = inst["id"]
    assert client.post(f"/v1/instances/{iid}/pause", headers=org.headers).json()["reason"] == "user"
    r = client.post(f"/v1/instances/{iid}/pause", headers=org.headers)
    assert r.status_code == 409 and "it is paused (user)" in r.json()["detail"]
    assert client.post(f"/v1/instances/{iid}/resume", headers=org.headers).json()["state"] == (
        "running"
    )
    r = client.get("/v1/instances", headers=org.headers, params={"state": "running"})
    assert [i["id"] for i in r.json()] == [iid]
    assert client.get("/v1/instances", headers=org.headers, params={"state": "paused"}).json() == []
    assert client.delete(f"/v1/instances/{iid}", headers=org.headers).json()["state"] == "stopped"
    r = client.post(f"/v1/instances/{iid}/resume", headers=org.headers)
    assert r.status_code == 409 and "stopped" in r.json()["detail"]
    with runtime.session() as s:
        events = s.scalars(select(InstanceEvent).order_by(InstanceEvent.id)).all()
        assert [(e.from_state, e.to_state) for e in events] == [
            ("pending", "running"),
            ("running", "paused"),
            ("paused", "running"),
            ("running", "stopped"),
        ]


def test_heartbeats_move_last_seen_and_last_active(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    advance(runtime, 30)
    b1 = client.post(
        f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": False}
    ).json()
    assert b1["last_seen_at"] > b1["last_active_at"]
    advance(runtime, 30)
    b2 = client.post(
        f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True}
    ).json()
    assert b2["last_seen_at"] == b2["last_active_at"] > b1["last_seen_at"]


def test_bad_input(client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
    org = make_org()
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "huge"})
    assert r.status_code == 422
    assert "small, medium, large, gpu" in r.json()["detail"]
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "gpu"})
    assert r.status_code == 403 and "Free Tier" in r.json()["detail"]
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small", "cpu": 4})
    assert r.status_code == 422
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": "yes"})
    assert r.status_code == 422
    client.delete(f"/v1/instances/{iid}", headers=org.headers)
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert r.status_code == 409 and "stopped" in r.json()["detail"]
    other = make_org("Globex", email="a@globex.test")
    for method, path in (("get", ""), ("post", "/pause"), ("post", "/resume"), ("delete", "")):
        r = client.request(method.upper(), f"/v1/instances/{iid}{path}", headers=other.headers)
        assert r.status_code == 404, (method, path)
    assert client.get("/v1/instances/not-a-uuid", headers=org.headers).status_code == 422


def test_running_limit(client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
    org = make_org()  # free tier: 2 running
    ids = [
        client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
        for _ in range(2)
    ]
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 409 and "allows 2 running instances" in r.json()["detail"]
    client.post(f"/v1/instances/{ids[0]}/pause", headers=org.headers)
    assert (
        client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).status_code == 201
    )
    r = client.post(f"/v1/instances/{ids[0]}/resume", headers=org.headers)
    assert r.status_code == 409


def test_parallel_pause_resume_heartbeat_leave_at_most_one_open_segment(
    runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    with runtime.session() as s:
        iid = instance_service.create(
            s, org.id, tier="small", name=None, catalog=runtime.catalog, now=runtime.clock.now()
        ).id

    def call(i: int) -> str:
        with runtime.session() as s:
            now = runtime.clock.now()
            try:
                if i % 3 == 0:
                    instance_service.pause(s, org.id, iid, catalog=runtime.catalog, now=now)
                elif i % 3 == 1:
                    instance_service.resume(s, org.id, iid, catalog=runtime.catalog, now=now)
                else:
                    instance_service.heartbeat(
                        s, org.id, iid, active=True, catalog=runtime.catalog, now=now
                    )
            except OrzbobError as exc:
                return f"{exc.status_code}"
        return "ok"

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(call, range(50)))
        assert set(results) <= {"ok", "409"}
        advance(runtime, 7)
    with runtime.session() as s:
        segs = s.scalars(
            select(UsageSegment)
            .where(UsageSegment.instance_id == uuid.UUID(str(iid)))
            .order_by(UsageSegment.started_at, UsageSegment.id)
        ).all()
        state = instance_service.get(s, org.id, iid).state
    open_segs = [x for x in segs if x.ended_at is None]
    assert len(open_segs) == (1 if state == "running" else 0)
    closed = [x for x in segs if x.ended_at is not None]
    for a, b in itertools.pairwise(closed):
        assert a.ended_at is not None and a.ended_at <= b.started_at
