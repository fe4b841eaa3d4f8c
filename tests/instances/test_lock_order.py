"""Defect 3 (PostgreSQL): jobs that touch several orgs never deadlock with each other.

The interleavings are forced: two heartbeat-timeout sweeps visiting the same orgs in A,B and
B,A order, and a sweep against a checkpoint, each pausing while it holds its first locks.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.instances.models import Instance
from orzbob.instances.sweeps import sweep_service
from orzbob.instances.tasks import stop_silent_instances
from orzbob.metering.models import UsageRecord
from orzbob.metering.service import metering_service
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle

WAIT = 10.0


@pytest.fixture(autouse=True)
def _postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("row-lock deadlocks exist on PostgreSQL only (SQLite has one writer)")


def beat(client: TestClient, org: OrgHandle, iid: str) -> None:
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert r.status_code == 200, r.text


def fleet(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    alive: tuple[str, ...] = (),
) -> Any:
    """Two orgs with two instances each, silent for 400 s after one minute, except `alive`
    ones, which beat 200 s later."""
    a = make_org("A", plan="base-plus-usage", email="a@a.test")
    b = make_org("B", plan="base-plus-usage", email="b@b.test")
    ids: dict[str, tuple[OrgHandle, str]] = {}
    for org, name in ((a, "A1"), (a, "A2"), (b, "B1"), (b, "B2")):
        r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
        ids[name] = (org, str(r.json()["id"]))
    clock = runtime.manual_clock
    assert clock is not None
    clock.advance(60)
    for org, iid in ids.values():
        beat(client, org, iid)
    clock.advance(200)
    for name in alive:
        beat(client, *ids[name])
    clock.advance(200)
    return ids


def run_threads(*targets: Callable[[], object]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), name=f"t{i}") for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def states(runtime: Runtime, ids: dict[str, tuple[OrgHandle, str]]) -> dict[str, str | None]:
    with runtime.session() as s:
        return {
            name: s.get(Instance, uuid.UUID(iid)).reason  # type: ignore[union-attr]
            for name, (_, iid) in ids.items()
        }


def total_minutes(runtime: Runtime) -> int:
    with runtime.session() as s:
        return int(s.scalar(select(func.coalesce(func.sum(UsageRecord.minutes), 0))))


def test_two_sweeps_in_opposite_org_order_do_not_deadlock(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = fleet(client, runtime, make_org)
    order = {
        "t0": [uuid.UUID(ids[n][1]) for n in ("A1", "B1")],
        "t1": [uuid.UUID(ids[n][1]) for n in ("B2", "A2")],
    }
    monkeypatch.setattr(
        sweep_service,
        "silent_candidates",
        lambda *a, **k: order.pop(threading.current_thread().name, []),
    )
    both_hold_their_first_org = threading.Barrier(2, timeout=WAIT)
    first = threading.local()
    real_close = metering_service.close_segments

    def close(*args: Any, **kwargs: Any) -> Any:
        rows = real_close(*args, **kwargs)
        if not getattr(first, "done", False):
            first.done = True
            both_hold_their_first_org.wait()
        return rows

    monkeypatch.setattr(metering_service, "close_segments", close)
    caplog.set_level(logging.ERROR)
    errors = run_threads(
        lambda: stop_silent_instances(runtime), lambda: stop_silent_instances(runtime)
    )
    assert errors == []
    assert "deadlock" not in caplog.text.lower()
    assert set(states(runtime, ids).values()) == {"heartbeat_timeout"}
    assert total_minutes(runtime) == 4


def test_a_sweep_against_a_checkpoint_does_not_deadlock(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A2 and B2 are alive, with minutes for the checkpoint to record.
    ids = fleet(client, runtime, make_org, alive=("A2", "B2"))
    passes = [[uuid.UUID(ids[n][1]) for n in ("A1", "B1")]]
    monkeypatch.setattr(
        sweep_service, "silent_candidates", lambda *a, **k: passes.pop() if passes else []
    )
    sweep_holds_a = threading.Event()
    checkpoint_started = threading.Event()
    real_close = metering_service.close_segments

    def close(*args: Any, **kwargs: Any) -> Any:
        rows = real_close(*args, **kwargs)
        if not sweep_holds_a.is_set():
            sweep_holds_a.set()
            assert checkpoint_started.wait(WAIT)
            threading.Event().wait(1.5)  # let the checkpoint queue behind our period lock
        return rows

    def checkpoint() -> None:
        assert sweep_holds_a.wait(WAIT)
        checkpoint_started.set()
        checkpoint_open_segments(runtime)

    monkeypatch.setattr(metering_service, "close_segments", close)
    caplog.set_level(logging.ERROR)
    errors = run_threads(lambda: stop_silent_instances(runtime), checkpoint)
    assert errors == []
    assert "deadlock" not in caplog.text.lower()
    reasons = states(runtime, ids)
    assert (reasons["A1"], reasons["B1"]) == ("heartbeat_timeout", "heartbeat_timeout")
    assert (reasons["A2"], reasons["B2"]) == (None, None)
    assert total_minutes(runtime) == 2 + 2 * 5  # A2, B2: 260 s → 5 minutes each
