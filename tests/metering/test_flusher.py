"""The flusher against the local Polar-compatible server, over real HTTP with the real SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orzbob.metering.models import RecordState, UsageRecord
from orzbob.runtime import Runtime
from tests.conftest import soak_scale
from tests.metering.polar_support import (
    billing_settings,
    control,
    flusher_for,
    local_polar,
    make_records,
    server_stats,
)
from tests.orz_runner import run_orz
from tests.polar_local.polar_local_support import wait_for


def delayed(c: httpx.Client) -> int:
    """Requests the local Polar server has held back so far (its latency fault fired)."""
    return sum(r["fired"] for r in c.get("/faults").json()["items"])


def leases_expired(runtime: Runtime) -> bool:
    """No pending record is held by a flusher's lease (leases run on real time)."""
    now = datetime.now(UTC)
    with runtime.session() as s:
        leases = s.scalars(
            select(UsageRecord.claim_expires_at).where(
                UsageRecord.state == RecordState.PENDING.value,
                UsageRecord.claim_expires_at.is_not(None),
            )
        ).all()
    return all((at if at.tzinfo else at.replace(tzinfo=UTC)) < now for at in leases if at)


def states(runtime: Runtime) -> dict[str, int]:
    with runtime.session() as s:
        rows = s.execute(select(UsageRecord.state, func.count()).group_by(UsageRecord.state))
        return {state: n for state, n in rows}


@pytest.mark.soak
def test_every_record_arrives_once_despite_faults(runtime: Runtime, tmp_path: Path) -> None:
    n = max(500, int(10_000 * soak_scale()))
    org_id, minutes = make_records(runtime, n)
    with local_polar(tmp_path) as url, control(url) as c:
        for kind, extra in (
            ("status", {"status": 503}),
            ("status", {"status": 500}),
            ("status", {"status": 429, "retry_after": 2}),
            ("drop", {}),
        ):
            c.post(
                "/faults",
                json={
                    "kind": kind,
                    # Four independent 5.5 % faults: about 20 % of requests fail somehow.
                    "rate": 0.055,
                    "seed": len(extra) + 7,
                    "path_prefix": "/v1/events/ingest",
                    **extra,
                },
            ).raise_for_status()
        slept: list[float] = []
        flusher = flusher_for(
            runtime,
            billing_settings(runtime.settings, url),
            batch_size=250,
            max_attempts=100,
            sleep=slept.append,
        )
        report = flusher.flush()
        assert report.stopped is None
        stats = server_stats(url, org_id)
        fired = sum(r["fired"] for r in c.get("/faults").json()["items"])
    assert states(runtime) == {"sent": n}
    assert report.sent == n and report.dead == 0
    assert stats["count"] == n
    assert stats["sums"]["minutes"] == minutes
    assert fired > 0 and report.retries >= fired
    # A 429 is retried no earlier than its Retry-After.
    assert any(s >= 2 for s in slept)


def test_one_invalid_record_is_dead_lettered_and_the_rest_still_go(
    runtime: Runtime, tmp_path: Path
) -> None:
    org_id, _ = make_records(runtime, 40)
    with runtime.session() as s:
        bad = s.scalars(select(UsageRecord).order_by(UsageRecord.id).offset(17).limit(1)).one()
        # An event timestamp in the future: Polar refuses that one event (all-or-nothing).
        bad.interval_end = runtime.clock.now() + timedelta(days=3650)
        bad_id = bad.id
    with local_polar(tmp_path) as url:
        report = flusher_for(runtime, billing_settings(runtime.settings, url)).flush()
        stats = server_stats(url, org_id)
    assert report.sent == 39 and report.dead == 1
    assert stats["count"] == 39
    with runtime.session() as s:
        dead = s.get(UsageRecord, bad_id)
        assert dead is not None and dead.state == RecordState.DEAD.value
        assert dead.last_error and "past" in dead.last_error.lower()


def test_bad_credentials_keep_records_pending(runtime: Runtime, tmp_path: Path) -> None:
    make_records(runtime, 10)
    with local_polar(tmp_path) as url:
        settings = billing_settings(runtime.settings, url, polar_api_key="polar_xyz_wrongkind")
        report = flusher_for(runtime, settings).flush()
    assert report.stopped and "401" in report.stopped
    assert states(runtime) == {"pending": 10}


def test_giving_up_for_now_releases_records_for_the_next_run(
    runtime: Runtime, tmp_path: Path
) -> None:
    make_records(runtime, 30)
    with local_polar(tmp_path) as url, control(url) as c:
        # Polar stays down for the whole first run. (A fault for the next N calls would
        # not do: two batches are in flight, and on PostgreSQL concurrent claims may split
        # the 30 records between them, so N failures spread over both and neither gives up.)
        c.post(
            "/faults",
            json={"kind": "status", "status": 503, "path_prefix": "/v1/events/ingest"},
        )
        flusher = flusher_for(runtime, billing_settings(runtime.settings, url), max_attempts=3)
        first = flusher.flush()
        assert first.stopped and "giving up for now" in first.stopped and first.sent == 0
        assert states(runtime) == {"pending": 30}
        c.delete("/faults").raise_for_status()
        second = flusher.flush()
    assert second.sent == 30 and states(runtime) == {"sent": 30}
    with runtime.session() as s:
        assert s.scalar(select(func.min(UsageRecord.attempts))) == 2


def _flusher_process(db_url: str, polar_url: str, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BILLING_ENABLED": "true",
        "POLAR_API_URL": polar_url,
        "POLAR_API_KEY": "polar_oat_" + "p" * 40,
        "POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "orzbob.cli", "metering", "flush", "--once", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_flusher_killed_mid_batch_loses_nothing(
    runtime: Runtime, tmp_path: Path, db_url: str
) -> None:
    n = 600
    org_id, minutes = make_records(runtime, n)
    with local_polar(tmp_path) as url, control(url) as c:
        c.post(
            "/faults",
            json={"kind": "latency", "latency_ms": 1500, "path_prefix": "/v1/events/ingest"},
        )
        proc = _flusher_process(db_url, url, "--batch-size", "200", "--lease-seconds", "1")
        # Killed while its second batch is on the wire: the first was answered (and marked
        # sent), the second reached Polar, which holds it for 1.5 s before answering.
        wait_for(lambda: delayed(c) >= 2, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        c.delete("/faults")
        # The delayed batch lands at Polar, and the dead flusher's leases run out.
        wait_for(lambda: server_stats(url, org_id)["count"] >= 400)
        wait_for(lambda: leases_expired(runtime))
        report = flusher_for(runtime, billing_settings(runtime.settings, url)).flush()
        stats = server_stats(url, org_id)
    assert states(runtime) == {"sent": n}
    assert stats["count"] == n and stats["sums"]["minutes"] == minutes
    # The batch the dead flusher had sent is sent again, and Polar drops it as duplicates.
    assert report.duplicates == stats["duplicates"] > 0


@pytest.mark.soak
def test_two_flusher_processes_never_send_a_record_twice(
    runtime: Runtime, tmp_path: Path, db_url: str
) -> None:
    n = max(1000, int(5000 * soak_scale()))
    org_id, _ = make_records(runtime, n)
    with local_polar(tmp_path) as url, control(url) as c:
        # Slow enough that one process alone needs seconds (batches of 50, two in flight,
        # 400 ms each): the other has started long before, however loaded the machine.
        c.post(
            "/faults",
            json={"kind": "latency", "latency_ms": 400, "path_prefix": "/v1/events/ingest"},
        )
        procs = [_flusher_process(db_url, url, "--batch-size", "50") for _ in range(2)]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        stats = server_stats(url, org_id)
    assert all(p.returncode == 0 for p in procs), outputs
    assert states(runtime) == {"sent": n}
    assert stats["count"] == n
    assert stats["duplicates"] == 0
    # Both did a share of the work.
    assert all("sent" in out and not out.strip().startswith("flushed: 0 sent") for out in outputs)


@pytest.mark.parametrize("enabled", [False])
def test_billing_disabled_keeps_usage_local(runtime: Runtime, enabled: bool) -> None:
    from orzbob.jobs import register_jobs

    make_records(runtime, 5)
    register_jobs(runtime)
    assert runtime.flusher is None
    assert all(j.name != "metering.flush" for j in runtime.scheduler.jobs)
    assert states(runtime) == {"pending": 5}


def test_shutdown_flushes_what_is_pending(runtime: Runtime, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from orzbob.api.app import create_app
    from orzbob.jobs import register_jobs

    org_id, _ = make_records(runtime, 25)
    with local_polar(tmp_path) as url:
        runtime.settings = billing_settings(runtime.settings, url)
        register_jobs(runtime)
        with TestClient(create_app(runtime)) as client:
            assert client.get("/readyz").json()["checks"]["billing"] == "enabled"
            assert states(runtime) == {"pending": 25}
        # Leaving the client shuts the app down, which ships the queue.
        assert states(runtime) == {"sent": 25}
        assert server_stats(url, org_id)["count"] == 25


def test_dead_records_can_be_requeued_after_the_fix(
    runtime: Runtime, tmp_path: Path, db_url: str
) -> None:
    org_id, _ = make_records(runtime, 10)
    with runtime.session() as s:
        bad = s.scalars(select(UsageRecord).order_by(UsageRecord.id).limit(1)).one()
        real_end = bad.interval_end
        bad.interval_end = runtime.clock.now() + timedelta(days=3650)
        bad_id = bad.id
    with local_polar(tmp_path) as url:
        flusher = flusher_for(runtime, billing_settings(runtime.settings, url))
        assert flusher.flush().dead == 1
        env = {**os.environ, "DATABASE_URL": db_url}
        counts = json.loads(run_orz(["metering", "status", "--json"], env=env).stdout)
        assert counts["dead"] == 1 and counts["pending"] == 0 and counts["sent"] > 0
        listed = run_orz(["metering", "dead", "--json"], env=env)
        assert str(bad_id) in listed.stdout and "past" in listed.stdout.lower()
        with runtime.session() as s:  # the cause is fixed (here: the timestamp)
            record = s.get(UsageRecord, bad_id)
            assert record is not None
            record.interval_end = real_end
        requeued = run_orz(["metering", "requeue", str(bad_id)], env=env)
        assert requeued.returncode == 0 and "1 record(s)" in requeued.stdout
        assert flusher.flush().sent == 1
        stats = server_stats(url, org_id)
    assert states(runtime) == {"sent": 10}
    assert stats["count"] == 10 and stats["duplicates"] == 0
