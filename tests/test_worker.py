"""Two `orz worker` processes and two API replicas on one PostgreSQL database, driven by the
shared test clock while instances churn: the ledger matches the lifecycle, Polar holds each
record once, nothing deadlocks and no instance is paused twice."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from orzbob.accounts.service import account_service
from orzbob.instances.models import TRANSITIONS, Instance, InstanceEvent, State
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment
from orzbob.metering.service import rounded_minutes
from orzbob.runtime import Runtime
from tests.conftest import soak_scale
from tests.metering.polar_support import TOKEN, control, local_polar

STEP = 30  # test-clock seconds per round of churn
TIMEOUT = 60  # heartbeat timeout (test-clock seconds)


@pytest.fixture(autouse=True)
def _postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("several job-running processes share one PostgreSQL database (not SQLite)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orzbob.cli", *args], env=env, stdout=out, stderr=out
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not start:\n{log.read_text()}")


class Fleet:
    """Orgs whose instances are driven at random through the two API replicas."""

    def __init__(self, apis: list[httpx.Client], orgs: list[dict[str, str]], seed: int) -> None:
        self.apis, self.orgs, self.rng = apis, orgs, random.Random(seed)
        self.instances: dict[str, dict[str, Any]] = {}  # id -> {org headers, silent until}

    def api(self) -> httpx.Client:
        return self.rng.choice(self.apis)

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        r = self.api().request(method, path, headers=headers, **kw)
        # 409: raced with a sweep, a late-heartbeat stop or the running limit; never a 5xx.
        assert r.status_code in (200, 201, 409), (method, path, r.status_code, r.text)
        return r

    def churn(self, step: int) -> None:
        for headers in self.orgs:
            mine = [i for i, v in self.instances.items() if v["headers"] is headers]
            if len(mine) < 3 or self.rng.random() < 0.2:
                r = self.call("POST", "/v1/instances", headers, json={"tier": "small"})
                if r.status_code == 201:
                    self.instances[r.json()["id"]] = {"headers": headers, "silent_until": -1}
        for iid, inst in list(self.instances.items()):
            headers, roll = inst["headers"], self.rng.random()
            if inst["silent_until"] >= step:
                continue  # an agent gone quiet: the heartbeat timeout should stop it
            if roll < 0.06:
                inst["silent_until"] = step + 3
            elif roll < 0.14:
                self.call("POST", f"/v1/instances/{iid}/pause", headers)
            elif roll < 0.24:
                self.call("POST", f"/v1/instances/{iid}/resume", headers)
            elif roll < 0.28:
                self.call("DELETE", f"/v1/instances/{iid}", headers)
                del self.instances[iid]
                continue
            r = self.call("POST", f"/v1/instances/{iid}/heartbeat", headers, json={"active": True})
            if r.status_code == 409:
                del self.instances[iid]  # stopped by the timeout

    def stop_all(self) -> None:
        for iid, inst in self.instances.items():
            self.call("DELETE", f"/v1/instances/{iid}", inst["headers"])


def advance(api: httpx.Client, staff: dict[str, str], seconds: int) -> None:
    r = api.post("/v1/test-clock/advance", headers=staff, json={"seconds": seconds})
    assert r.status_code == 200, r.text


@pytest.mark.soak
def test_two_workers_and_two_api_replicas_keep_the_ledger_exact(
    runtime: Runtime, db_url: str, tmp_path: Path
) -> None:
    steps = max(8, int(16 * soak_scale()))
    now = datetime.now(UTC)
    with runtime.session() as s:
        orgs = []
        for n in range(3):
            org = account_service.create_org(
                s, name=f"Org {n}", billing_emails=[f"ops@{n}.test"], plan_id="base-plus-usage",
                catalog=runtime.catalog, now=now,
            )  # fmt: skip
            _, raw = account_service.create_token(s, org_id=org.id, role="admin", name="t", now=now)
            orgs.append({"Authorization": f"Bearer {raw}"})
        _, raw = account_service.create_token(
            s, org_id=None, role="engineering", name="staff", now=now
        )
        staff = {"Authorization": f"Bearer {raw}"}
    with ExitStack() as stack:
        polar = stack.enter_context(local_polar(tmp_path, accept_future_timestamps=True))
        base_env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "ORZBOB_ENV": "test",
            "ORZBOB_TEST_CLOCK": "true",
            "BILLING_ENABLED": "true",
            "POLAR_API_URL": polar,
            "POLAR_API_KEY": TOKEN,
            "POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
            "HEARTBEAT_TIMEOUT_SECONDS": str(TIMEOUT),
            "FLUSH_BATCH_SIZE": "40",
        }
        logs: list[Path] = []
        procs = []
        urls = []
        for n in range(2):
            log = tmp_path / f"worker-{n}.log"
            env = {**base_env, "ORZBOB_WORKER_ID": f"worker-{n}"}
            procs.append(stack.enter_context(process(["worker"], env, log)))
            logs.append(log)
        for n in range(2):
            port, log = free_port(), tmp_path / f"api-{n}.log"
            env = {**base_env, "ORZBOB_RUN_JOBS": "false"}
            args = ["server", "--no-migrate", "--port", str(port)]
            proc = stack.enter_context(process(args, env, log))
            urls.append(f"http://127.0.0.1:{port}")
            logs.append(log)
            procs.append(proc)
        for url, proc, log in zip(urls, procs[2:], logs[2:], strict=True):
            wait_healthy(url, proc, log)
        apis = [stack.enter_context(httpx.Client(base_url=u, timeout=30)) for u in urls]
        fleet = Fleet(apis, orgs, seed=8)
        advance(apis[0], staff, STEP)  # from here on every process shares one clock
        for step in range(steps):
            fleet.churn(step)
            advance(fleet.api(), staff, STEP)
        fleet.stop_all()
        for _ in range(3):  # let the workers record, sweep and ship what is left
            advance(fleet.api(), staff, 60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(p.poll() is None for p in procs) and shipped(runtime, polar):
                break
            time.sleep(0.25)
        for proc in procs:
            assert proc.poll() is None, "a process died"
        assert shipped(runtime, polar, exact=True)
    texts = {log.name: log.read_text() for log in logs}
    for name, text in texts.items():
        assert "deadlock" not in text.lower(), (name, text[-4000:])
        assert "periodic job" not in text, (name, text[-4000:])
    assert_ledger_matches_lifecycle(runtime)


def shipped(runtime: Runtime, polar: str, *, exact: bool = False) -> bool:
    """Every record is sent, and Polar holds each record's external_id exactly once."""
    with runtime.session() as s:
        states = dict(
            s.execute(select(UsageRecord.state, func.count()).group_by(UsageRecord.state)).all()
        )
        ids = {str(i) for i in s.scalars(select(UsageRecord.id))}
    if set(states) - {RecordState.SENT.value}:
        assert not exact, states
        return False
    external: list[str] = []
    with control(polar) as c:
        while True:
            page = c.get("/events", params={"limit": 1000, "offset": len(external)}).json()
            external += [e["external_id"] for e in page["items"]]
            if len(external) >= page["total"] or not page["items"]:
                break
    if exact:
        assert len(external) == len(set(external)) == len(ids) and set(external) == ids
    return set(external) == ids


def assert_ledger_matches_lifecycle(runtime: Runtime) -> None:
    with runtime.session() as s:
        instances = s.scalars(select(Instance)).all()
        events: dict[uuid.UUID, list[InstanceEvent]] = defaultdict(list)
        # Ids are time-ordered at insert: the order the transitions were committed in (the
        # workers' test clocks may trail the API's by a tick, so `at` is not that order).
        for e in s.scalars(select(InstanceEvent).order_by(InstanceEvent.id)):
            events[e.instance_id].append(e)
        segments: dict[uuid.UUID, list[UsageSegment]] = defaultdict(list)
        for seg in s.scalars(select(UsageSegment).order_by(UsageSegment.started_at)):
            segments[seg.instance_id].append(seg)
        minutes = dict(
            s.execute(
                select(UsageRecord.segment_id, func.sum(UsageRecord.minutes)).group_by(
                    UsageRecord.segment_id
                )
            ).all()
        )
    assert len(instances) >= 9
    reasons = set()
    for inst in instances:
        assert inst.state == State.STOPPED.value, inst.id
        chain = events[inst.id]
        # Every transition is legal and starts where the previous one ended: no instance is
        # paused (or stopped) twice.
        state = State.PENDING
        for e in chain:
            assert e.from_state == state.value and State(e.to_state) in TRANSITIONS[state], chain
            state = State(e.to_state)
            reasons.add(e.reason)
        entered = [e for e in chain if e.to_state == State.RUNNING.value]
        left = [e for e in chain if e.from_state == State.RUNNING.value]
        segs = segments[inst.id]
        assert len(segs) == len(entered) == len(left)
        for seg, start, end in zip(segs, entered, left, strict=True):
            assert seg.started_at == start.at and seg.ended_at is not None
            if end.reason == "heartbeat_timeout":
                assert seg.ended_at <= end.at  # closed at the last beat: dead time unbilled
            else:
                assert seg.ended_at == end.at
            assert minutes.get(seg.id, 0) == rounded_minutes(seg.started_at, seg.ended_at)
    assert "heartbeat_timeout" in reasons  # the sweeps (or late beats) did run
