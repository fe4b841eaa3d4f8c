"""Usage records written per second through the service layer, against a raw driver
`executemany` of the same rows in the same run; heartbeats per second over HTTP."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select, update

from bench.common import Timer, make_runtime, postgres_available, record, row, scratch_database
from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.instances.models import Instance
from orzbob.instances.service import instance_service
from orzbob.metering.models import UsageRecord
from orzbob.metering.tasks import checkpoint_open_segments


def _setup(url: str, orgs: int, per_org: int) -> Any:
    rt = make_runtime(url)
    with rt.session() as s:
        for i in range(orgs):
            org = account_service.create_org(
                s,
                name=f"org{i}",
                billing_emails=[f"o{i}@bench.test"],
                plan_id="usage-only",
                catalog=rt.catalog,
                now=rt.clock.now(),
            )
            for _ in range(per_org):
                instance_service.create(
                    s, org.id, tier="small", name=None, catalog=rt.catalog, now=rt.clock.now()
                )
    return rt


def _raw_executemany(url: str, rows: list[dict[str, Any]]) -> float:
    """The same rows through the bare driver, in one transaction."""
    cols = list(rows[0])
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        marks = ", ".join("?" * len(cols))
        sql = f"INSERT INTO usage_records_raw ({', '.join(cols)}) VALUES ({marks})"
        conn.execute("CREATE TABLE usage_records_raw AS SELECT * FROM usage_records WHERE 0")
        values = [tuple(_sqlite(v) for v in r.values()) for r in rows]
        with Timer() as t:
            conn.executemany(sql, values)
            conn.commit()
        conn.close()
        return t.seconds
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE usage_records_raw (LIKE usage_records INCLUDING ALL)")
        conn.commit()
        sql = (
            f"INSERT INTO usage_records_raw ({', '.join(cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})"
        )
        values = [tuple(r.values()) for r in rows]
        with Timer() as t, conn.cursor() as cur:
            cur.executemany(sql, values)
            conn.commit()
    return t.seconds


def _sqlite(v: Any) -> Any:
    import uuid
    from datetime import datetime

    if isinstance(v, uuid.UUID):
        return v.hex
    if isinstance(v, datetime):
        return v.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return v


def bench_records(kind: str, orgs: int, per_org: int, passes: int) -> None:
    with scratch_database(kind) as url:
        rt = _setup(url, orgs, per_org)
        clock = rt.manual_clock
        assert clock is not None
        written = 0
        with Timer() as t:
            for _ in range(passes):
                clock.advance(60)
                with rt.session() as s:  # every instance beat in the last minute
                    s.execute(update(Instance).values(last_seen_at=clock.now()))
                written += checkpoint_open_segments(rt)
        service_rate = written / t.seconds
        with rt.session() as s:
            rows = [
                {c.name: getattr(r, c.key) for c in UsageRecord.__table__.columns}
                for r in s.scalars(select(UsageRecord))
            ]
        raw_seconds = _raw_executemany(url, rows)
        raw_rate = len(rows) / raw_seconds
        rt.engine.dispose()
    row(
        f"{kind}: service layer (checkpoint → allocate → rollups)",
        f"{service_rate:>10,.0f} records/s ({written} records)",
    )
    row(f"{kind}: raw driver executemany, same rows", f"{raw_rate:>10,.0f} records/s")
    row(f"{kind}: service / raw", f"{service_rate / raw_rate:>10.2f}")
    record(
        f"checkpoint, service path ({kind})",
        service_rate,
        "records/s",
        baseline=("raw executemany", raw_rate),
        target=0.5,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _beat_loop(job: tuple[str, str, str, float]) -> int:
    """One load-generating process: heartbeats back to back until the deadline."""
    base, token, instance_id, seconds = job
    done = 0
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        while time.perf_counter() < deadline:
            c.post(f"/v1/instances/{instance_id}/heartbeat", json={"active": True})
            done += 1
    return done


def bench_heartbeats(seconds: float, workers: int) -> None:
    with scratch_database("sqlite") as url:
        rt = _setup(url, 1, 2)
        with rt.session() as s:
            org_id = s.scalars(select(Org.id)).one()
            inst = [i.id for i in instance_service.list(s, org_id)]
            _, token = account_service.create_token(
                s,
                org_id=org_id,
                role="member",
                name="bench",
                now=rt.clock.now(),
            )
        rt.engine.dispose()
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "ORZBOB_TEST_CLOCK": "true",
            "BILLING_ENABLED": "false",
            "ORZBOB_RUN_JOBS": "false",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "orzbob.cli", "server", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    httpx.get(base + "/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            jobs = [(base, token, str(inst[n % len(inst)]), seconds) for n in range(workers)]
            with Timer() as t, ProcessPoolExecutor(workers) as pool:
                total = sum(pool.map(_beat_loop, jobs))
        finally:
            proc.terminate()
            proc.wait(10)
    row(
        f"heartbeats over HTTP (SQLite, 1 uvicorn worker, {workers} client processes)",
        f"{total / t.seconds:>10,.0f} req/s",
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench metering")
    p.add_argument("--orgs", type=int, default=50)
    p.add_argument("--instances-per-org", type=int, default=5)
    p.add_argument("--passes", type=int, default=40)
    p.add_argument("--heartbeat-seconds", type=float, default=5.0)
    p.add_argument("--heartbeat-clients", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    a, _ = p.parse_known_args(argv)
    if a.quick:
        a.passes, a.heartbeat_seconds = 10, 2.0
    print("metering: usage records written")
    bench_records("sqlite", a.orgs, a.instances_per_org, a.passes)
    if postgres_available():
        bench_records("postgresql", a.orgs, a.instances_per_org, a.passes)
    else:
        row("postgresql", "skipped: PostgreSQL unreachable")
    print("metering: heartbeats")
    bench_heartbeats(a.heartbeat_seconds, a.heartbeat_clients)
