"""The sweep: exact cut-offs however late it runs, several sweeps at once, its metrics."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from orzbob.instances.models import Instance, InstanceEvent
from orzbob.kit import metrics
from orzbob.kit.clock import FOREVER, Idle
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from orzbob.throttle.tasks import sweep_caps
from tests.conftest import OrgHandle, advance
from tests.quota.usage import move_clock_to
from tests.throttle.support import instance, recorded_minutes, segments, start

HOUR = 3600
MIDNIGHT = datetime(2026, 3, 11, tzinfo=UTC)

# cap: (plan, tier, instances, agents report activity, run seconds, minutes until the cap)
CASES: dict[str, tuple[str, str, int, bool, int, int]] = {
    "continuous_cap": ("base-plus-usage", "small", 1, True, 10 * HOUR, 480),
    "idle": ("free-tier", "small", 1, False, 2 * HOUR, 30),
    "daily_cap": ("base-plus-usage", "small", 4, True, 7 * HOUR, 360),
    "quota_exhausted": ("free-tier", "small", 2, True, 6 * HOUR, 300),
    # 28 gpu minutes are $0.97, the 29th reaches the $1.00 limit.
    "spend_limit": ("usage-only", "gpu", 1, True, 2 * HOUR, 29),
}


def beats_recorded_until_now(runtime: Runtime, iids: list[str], *, active: bool) -> None:
    """The agents kept beating while no sweep ran (their beats stored, caps unchecked)."""
    now = runtime.clock.now()
    values: dict[str, Any] = {"last_seen_at": now}
    if active:
        values["last_active_at"] = now
    with runtime.session() as s:
        s.execute(
            update(Instance).where(Instance.id.in_([uuid.UUID(i) for i in iids])).values(values)
        )


@pytest.mark.parametrize("stalled", [False, True], ids=["checkpoint-first", "checkpoint-stalled"])
@pytest.mark.parametrize("cap", sorted(CASES))
def test_usage_stops_exactly_at_the_cap_however_late_the_jobs_run(
    cap: str,
    stalled: bool,
    runtime: Runtime,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
) -> None:
    """Hours late, the checkpoint and then the sweep, or the sweep alone with the checkpoint
    stalled (failing, or far behind). The sweep finds candidates from the rollups plus what
    running instances may have run since they were counted; with the checkpoint stalled that
    is hours, not the sweep's margin, and the caps that count usage must still pause the
    instances at the cap's moment and record the usage up to it."""
    plan, tier, n, active, seconds, minutes = CASES[cap]
    runtime.settings.heartbeat_timeout_seconds = 10**6
    org = make_org(plan=plan)
    if cap == "spend_limit":
        client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "1.00"})
    if cap == "daily_cap":
        move_clock_to(runtime, MIDNIGHT)
    iids = [start(client, org, tier) for _ in range(n)]
    started = runtime.clock.now()
    advance(runtime, seconds)  # no job runs: the sweep and the checkpoint are hours late
    beats_recorded_until_now(runtime, iids, active=active)

    if not stalled:
        checkpoint_open_segments(runtime)
        # The checkpoint alone never records a minute past the cap.
        assert [recorded_minutes(runtime, i) for i in iids] == [minutes] * n
    assert sweep_caps(runtime) == n
    for i in iids:
        inst = instance(client, org, i)
        assert (inst["state"], inst["reason"]) == ("paused", cap)
        (seg,) = segments(runtime, i)
        assert seg.ended_at is not None
        assert started + timedelta(minutes=minutes - 1) < seg.ended_at
        assert seg.ended_at <= started + timedelta(minutes=minutes)
        assert recorded_minutes(runtime, i) == minutes
    assert sweep_caps(runtime) == Idle(FOREVER)  # nothing left running
    assert client.get("/v1/billing", headers=org.headers).json()["throttle_status"] == (
        cap if cap in {"daily_cap", "quota_exhausted", "spend_limit"} else "none"
    )


def test_a_silent_agent_or_a_checkpoint_on_time_costs_the_sweep_no_exact_computation(
    runtime: Runtime,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only usage left uncounted for longer than the sweep's margin makes an org a candidate:
    not an instance whose agent went silent (counted up to its last beat, it adds nothing
    until the heartbeat timeout stops it), nor the minute the checkpoint has not reached
    yet. Then the org is computed exactly, once the checkpoint has stalled."""
    from orzbob.throttle.service import throttle_service

    org = make_org(plan="base-plus-usage")
    silent, beating = start(client, org), start(client, org)
    computed: list[uuid.UUID] = []
    enforce = throttle_service.enforce

    def counted(session: Any, org_id: uuid.UUID, **kw: Any) -> Any:
        computed.append(org_id)
        return enforce(session, org_id, **kw)

    monkeypatch.setattr(throttle_service, "enforce", counted)
    for minute in range(4):  # the silent agent's last beat is at the first minute
        advance(runtime, 60)
        beats_recorded_until_now(
            runtime, [beating] + ([silent] if minute == 0 else []), active=True
        )
        checkpoint_open_segments(runtime)
        advance(runtime, 30)  # half a minute not counted yet, as between two checkpoints
        beats_recorded_until_now(runtime, [beating], active=True)
        assert sweep_caps(runtime) == 0
    assert computed == []
    advance(runtime, 3 * 60)  # the checkpoint stalls for three minutes; the agent beats on
    beats_recorded_until_now(runtime, [beating], active=True)
    assert sweep_caps(runtime) == 0
    assert computed == [org.id]


def test_two_sweeps_and_a_checkpoint_at_once_pause_each_instance_once(
    runtime: Runtime,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime.settings.heartbeat_timeout_seconds = 10**6
    orgs = [make_org(name=f"org{i}") for i in range(12)]
    iids = [start(client, org) for org in orgs for _ in range(2)]
    advance(runtime, 6 * HOUR)
    beats_recorded_until_now(runtime, iids, active=True)
    workers = [
        Runtime.create(runtime.settings, clock=runtime.clock, engine=runtime.engine)
        for _ in range(3)
    ]
    jobs = [sweep_caps, sweep_caps, checkpoint_open_segments]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[Runtime], object], rt: Runtime) -> None:
        barrier.wait()
        try:
            job(rt)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with caplog.at_level(logging.ERROR):
        threads = [threading.Thread(target=run, args=p) for p in zip(jobs, workers, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        sweep_caps(runtime)  # whatever either sweep skipped as locked
    assert errors == [] and [r.message for r in caplog.records] == []
    with runtime.session() as s:
        pauses = dict(
            s.execute(
                select(InstanceEvent.instance_id, func.count())
                .where(InstanceEvent.to_state == "paused")
                .group_by(InstanceEvent.instance_id)
            ).all()
        )
    assert {str(k): v for k, v in pauses.items()} == {i: 1 for i in iids}
    assert {recorded_minutes(runtime, i) for i in iids} == {300}


def test_metrics_count_pauses_after_commit(
    with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "idle": value("orzbob_instances_paused_total", reason="idle"),
        "reaped": value("orzbob_idle_instances_reaped_total"),
        "sweeps": value("orzbob_cap_sweep_duration_seconds_count"),
    }
    org = make_org()
    iid = start(client, org)
    for _ in range(8):
        advance(with_jobs, 240)
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": False})
    assert instance(client, org, iid)["reason"] == "idle"
    assert value("orzbob_instances_paused_total", reason="idle") == before["idle"] + 1
    assert value("orzbob_idle_instances_reaped_total") == before["reaped"] + 1
    assert value("orzbob_cap_sweep_duration_seconds_count") > before["sweeps"]
