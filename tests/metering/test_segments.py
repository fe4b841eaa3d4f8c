"""Per-minute metering: segments, rounding, checkpoints, and usage records as an outbox."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.instances.models import Reason
from orzbob.instances.service import instance_service
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.metering.service import rounded_minutes
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, advance


def billed_minutes(runtime: Runtime, instance_id: uuid.UUID | str) -> int:
    with runtime.session() as s:
        return int(
            s.scalar(
                select(func.coalesce(func.sum(UsageRecord.minutes), 0)).where(
                    UsageRecord.instance_id == uuid.UUID(str(instance_id))
                )
            )
        )


def start(client: TestClient, org: OrgHandle, tier: str = "small") -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": tier})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (3601, 61)]
)
def test_rounding_is_up_per_segment(seconds: int, minutes: int) -> None:
    assert rounded_minutes(T0, T0 + timedelta(seconds=seconds)) == minutes


@pytest.mark.parametrize(("seconds", "minutes"), [(61, 2), (60, 1)])
def test_a_run_is_billed_its_rounded_length(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    seconds: int,
    minutes: int,
) -> None:
    org = make_org()
    iid = start(client, org)
    advance(runtime, seconds)
    assert client.delete(f"/v1/instances/{iid}", headers=org.headers).status_code == 200
    assert billed_minutes(runtime, iid) == minutes


def test_mixed_spans_total_the_per_segment_ceilings_whatever_checkpoints_ran(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    rng = random.Random(7)
    org = make_org(plan="base-plus-usage")
    iid = start(client, org, "medium")
    expected = 0
    spans = [61, 3599, 1, 120, 7261, 59, 600]
    for i, span in enumerate(spans):
        # Heartbeats keep the instance alive; checkpoints land at arbitrary moments.
        elapsed = 0
        while elapsed < span:
            step = min(span - elapsed, rng.randint(1, 200))
            advance(runtime, step)
            elapsed += step
            client.post(
                f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True}
            )
            if rng.random() < 0.5:
                checkpoint_open_segments(runtime)
        expected += -(-span // 60)
        if i < len(spans) - 1:
            assert client.post(f"/v1/instances/{iid}/pause", headers=org.headers).status_code == 200
            advance(runtime, rng.randint(1, 5000))  # paused time is never billed
            assert (
                client.post(f"/v1/instances/{iid}/resume", headers=org.headers).status_code == 200
            )
    assert client.delete(f"/v1/instances/{iid}", headers=org.headers).status_code == 200
    assert billed_minutes(runtime, iid) == expected
    with runtime.session() as s:
        segments = s.scalars(
            select(UsageSegment)
            .where(UsageSegment.instance_id == uuid.UUID(iid))
            .order_by(UsageSegment.started_at)
        ).all()
        assert [seg.emitted_minutes for seg in segments] == [-(-x // 60) for x in spans]
        records = s.scalars(
            select(UsageRecord)
            .where(UsageRecord.instance_id == uuid.UUID(iid))
            .order_by(UsageRecord.interval_end)
        ).all()
        assert all(r.minutes > 0 for r in records)
        assert len({r.id for r in records}) == len(records)


def test_checkpoints_make_running_usage_visible(
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org()
    iid = start(client, org)
    for _ in range(10):
        advance(with_jobs, 60)
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    # The checkpoint at minute 10 ran before the beat at minute 10 (it counts to the last beat).
    assert billed_minutes(with_jobs, iid) == 9
    advance(with_jobs, 60)
    assert billed_minutes(with_jobs, iid) == 10


def test_dead_time_after_the_last_heartbeat_is_never_billed(
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org()
    iid = start(client, org)
    for _ in range(4):
        advance(with_jobs, 150)  # beats at 2.5, 5, 7.5, 10 min
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": False})
    # Silence: checkpoints keep running each minute, then the timeout stops it at 15 min+.
    advance(with_jobs, 3600)
    body = client.get(f"/v1/instances/{iid}", headers=org.headers).json()
    assert body["state"] == "stopped" and body["reason"] == "heartbeat_timeout"
    assert billed_minutes(with_jobs, iid) == 10
    with with_jobs.session() as s:
        seg = s.scalars(
            select(UsageSegment).where(UsageSegment.instance_id == uuid.UUID(iid))
        ).one()
        assert seg.ended_at == T0 + timedelta(minutes=10)


def test_a_crash_after_the_commit_keeps_the_record_exactly_once(
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org()
    with runtime.session() as s:
        inst = instance_service.create(
            s, org.id, tier="small", name=None, catalog=runtime.catalog, now=runtime.clock.now()
        )
        iid = inst.id
    advance(runtime, 125)

    class Crash(Exception):
        pass

    # The pause commits, then the process dies before anything else happens.
    with pytest.raises(Crash), runtime.session() as s:
        instance_service.pause(s, org.id, iid, catalog=runtime.catalog, now=runtime.clock.now())
        s.commit()
        raise Crash
    # A crash *inside* the transaction leaves neither the transition nor the record.
    advance(runtime, 10)
    with runtime.session() as s:
        instance_service.resume(s, org.id, iid, catalog=runtime.catalog, now=runtime.clock.now())
    advance(runtime, 600)
    with pytest.raises(Crash), runtime.session() as s:
        instance_service.stop(s, org.id, iid, catalog=runtime.catalog, now=runtime.clock.now())
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 2
        raise Crash

    # "Restart": a fresh runtime on the same database, then every job runs again.
    fresh = Runtime.create(runtime.settings, clock=runtime.clock, engine=runtime.engine)
    with fresh.session() as s:
        instance_service.heartbeat(
            s, org.id, iid, active=True, catalog=fresh.catalog, now=fresh.clock.now()
        )
    checkpoint_open_segments(fresh)
    checkpoint_open_segments(fresh)
    with fresh.session() as s:
        records = s.scalars(select(UsageRecord).order_by(UsageRecord.interval_end)).all()
        assert [r.minutes for r in records] == [3, 10]
        inst = instance_service.get(s, org.id, iid)
        assert inst.state == "running"


def test_system_pause_reasons_are_recorded(
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org()
    with runtime.session() as s:
        inst = instance_service.create(
            s, org.id, tier="small", name="x", catalog=runtime.catalog, now=runtime.clock.now()
        )
    advance(runtime, 30)
    with runtime.session() as s:
        paused = instance_service.pause(
            s, org.id, inst.id, reason=Reason.IDLE, catalog=runtime.catalog, now=runtime.clock.now()
        )
        assert (paused.state, paused.reason) == ("paused", "idle")
    assert billed_minutes(runtime, inst.id) == 1
