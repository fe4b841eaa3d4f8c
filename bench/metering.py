"""Usage records written per second through the service layer, against a raw driver
`executemany` of the same rows in the same run; heartbeats per second over HTTP."""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import insert, select, update

from bench.common import (
    Timer,
    make_runtime,
    postgres_available,
    record,
    row,
    scratch_database,
    serve,
    settle_postgres,
    vacuum,
)
from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.hooks import install_hooks
from orzbob.instances.models import Instance
from orzbob.instances.service import instance_service
from orzbob.kit.db import new_id
from orzbob.metering.models import UsageRecord, UsageSegment
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
    """The same rows through the bare driver, in one transaction, into `usage_records`
    itself: its indexes and its foreign key (each record's segment, org and instance) are
    part of writing a record. The rows are deleted first (not timed) and the timed insert
    puts them back as they were. A copy made with `CREATE TABLE … (LIKE …)` has no foreign
    key: against it, raw measured about 110,000 rows/s where the table itself takes 80,000."""
    cols = list(rows[0])
    ids = [r["id"] for r in rows]
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        # As the service's own connections (`kit.db.make_engine`).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        values = [tuple(_sqlite(v) for v in r.values()) for r in rows]
        for k in range(0, len(ids), 500):
            marks = ", ".join("?" * len(ids[k : k + 500]))
            conn.execute(
                f"DELETE FROM usage_records WHERE id IN ({marks})",
                [_sqlite(i) for i in ids[k : k + 500]],
            )
        conn.commit()
        sql = f"INSERT INTO usage_records ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with Timer() as t:
            conn.executemany(sql, values)
            conn.commit()
        conn.close()
        return t.seconds
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM usage_records WHERE id = ANY(%s)", (ids,))
        conn.commit()
    vacuum(url)  # the deleted versions gone, as before the service wrote them
    with psycopg.connect(dsn) as conn:
        sql = (
            f"INSERT INTO usage_records ({', '.join(cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})"
        )
        values = [tuple(r.values()) for r in rows]
        with Timer() as t, conn.cursor() as cur:
            cur.executemany(sql, values)
            conn.commit()
    return t.seconds


def _raw_rate(url: str, rows: list[dict[str, Any]], runs: int = 3) -> float:
    """Rows per second of the raw `executemany`, the median of `runs`: on a shared machine
    one run of it has measured from 30,000 to 75,000 rows/s."""
    return statistics.median(len(rows) / _raw_executemany(url, rows) for _ in range(runs))


def _sqlite(v: Any) -> Any:
    import uuid

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
        written, seconds = 0, 0.0
        for _ in range(passes):
            clock.advance(60)
            with rt.session() as s:  # every instance beat in the last minute (not timed)
                s.execute(update(Instance).values(last_seen_at=clock.now()))
            with Timer() as t:
                n = checkpoint_open_segments(rt)
            assert isinstance(n, int)
            written += n
            seconds += t.seconds
        service_rate = written / seconds
        rows = _records(rt)
        raw_rate = _raw_rate(url, rows)
        rt.engine.dispose()
    row(
        f"{kind}: service layer (checkpoint → allocate → rollups)",
        f"{service_rate:>10,.0f} records/s ({written} records)",
    )
    row(f"{kind}: raw driver executemany, same rows", f"{raw_rate:>10,.0f} records/s")
    row(f"{kind}: service / raw", f"{service_rate / raw_rate:>10.2f}")
    # No target here: the checkpoint figure is a fleet's pass (`bench_fleet_pass`),
    # with the same rows written by raw. Passes of a few hundred segments measure what a pass
    # costs whatever its size (its statements for caps, plan changes, allocation, rollups
    # and alerts, and its commit) against a share of one raw `executemany` of every pass's
    # rows; they are shown so that this cost stays in view.
    record(
        f"checkpoint, service path, passes of {orgs * per_org} segments ({kind})",
        service_rate,
        "records/s",
        baseline=("raw executemany", raw_rate),
        note="no target: a pass's fixed cost; the target is the fleet pass's",
    )


def _fleet(url: str, segments: int, spend_limited: float) -> Any:
    """A fleet of `segments` running instances, five to an org (usage-only and base + usage
    plans alternating; a share of the orgs with a spend limit), written in bulk. The
    instances start in rounds, one per org each round, as a fleet's do over a day: an org's
    segment ids are far apart, not consecutive."""
    rt = make_runtime(url)
    now = rt.clock.now()
    n_orgs = -(-segments // 5)
    every = round(1 / spend_limited) if spend_limited else 0
    orgs = [
        {
            "id": new_id(),
            "name": f"org{i}",
            "billing_emails": [],
            "plan_id": ("usage-only", "base-plus-usage")[i % 2],
            "signup_at": now,
            "spend_limit_cents": 100_000 if every and i % every == 0 else None,
            "polar_customer_id": None,
            "polar_subscription_id": None,
            "subscription_period_start": None,
            "subscription_period_end": None,
            "polar_subscription_started_at": None,
            "created_at": now,
            "deleted_at": None,
        }
        for i in range(n_orgs)
    ]
    insts: list[dict[str, Any]] = []
    segs: list[dict[str, Any]] = []
    for k in range(segments):
        org_id, inst_id = orgs[k % n_orgs]["id"], new_id()
        insts.append(
            {
                "id": inst_id,
                "org_id": org_id,
                "name": "bench",
                "tier": "small",
                "state": "running",
                "reason": None,
                "created_at": now,
                "state_changed_at": now,
                "run_started_at": now,
                "last_seen_at": now,
                "last_active_at": now,
                "last_active_source": None,
                "stopped_at": None,
            }
        )
        segs.append(
            {
                "id": new_id(),
                "org_id": org_id,
                "instance_id": inst_id,
                "tier": "small",
                "started_at": now,
                "ended_at": None,
                "emitted_minutes": 0,
                "counted_until": now,
            }
        )
    with rt.session() as s:
        for model, rows in ((Org, orgs), (Instance, insts), (UsageSegment, segs)):
            for k in range(0, len(rows), 5000):
                s.execute(insert(model), rows[k : k + 5000])
    # Statistics and a vacuumed heap, as a live database has them: without statistics the
    # planner scans the freshly bulk-loaded tables and each batch costs in proportion to the
    # fleet.
    vacuum(url)
    settle_postgres()  # the load's writes are not the pass's
    return rt


# Passes timed after the fleet's first, each over every open segment again.
STEADY_PASSES = 3


def bench_fleet_pass(segments: int, spend_limited: float) -> None:
    """One checkpoint pass over a large fleet (every instance beat in the last minute)."""
    with scratch_database("postgresql") as url:
        rt = _fleet(url, segments, spend_limited)
        clock = rt.manual_clock
        assert clock is not None
        took: list[float] = []
        for _ in range(1 + STEADY_PASSES):
            clock.advance(60)
            second = clock.now()
            with rt.session() as s:
                s.execute(
                    update(Instance).values(last_seen_at=clock.now(), last_active_at=clock.now())
                )
            with Timer() as t:
                written = checkpoint_open_segments(rt)
            assert written == segments, (written, segments)
            took.append(t.seconds)
            # Passes follow each other here; on a live database a minute passes between them,
            # in which autovacuum clears the pass's old segment and rollup versions (a pass
            # updates every open segment) and, after the first, gathers statistics on the
            # period, rollup and day rows it created.
            vacuum(url)
        # The same comparison as `bench_records`, at the fleet's scale: batches of 2,500 (two
        # in flight) against an `executemany` of the last pass's own records.
        rows = _records(rt, since=second)
        raw_rate = _raw_rate(url, rows)
        rt.engine.dispose()
    # The passes after the first are the one a running fleet repeats every minute (their
    # median); the first also creates each org's period, rollup and day rows and is the first
    # to read the freshly loaded pages.
    first, steady = took[0], statistics.median(took[1:])
    record(
        f"checkpoint pass over {segments:,} open segments (postgresql)",
        steady,
        "s",
        limit=5.0,
        note=(
            f"{segments / steady:,.0f} segments/s; the median of {STEADY_PASSES} passes "
            f"({min(took[1:]):.2f}-{max(took[1:]):.2f} s); the fleet's first pass {first:.2f} s; "
            f"{spend_limited:.0%} of orgs spend-limited"
        ),
    )
    record(
        f"checkpoint, service path, {segments:,}-segment pass (postgresql)",
        segments / steady,
        "records/s",
        baseline=("raw executemany", raw_rate),
        target=0.5,
    )


def _records(rt: Any, since: datetime | None = None) -> list[dict[str, Any]]:
    """The usage records (those written at or after `since`), as column values, for the raw
    driver's copy of them."""
    table = UsageRecord.__table__
    stmt = select(*table.columns).order_by(table.c.id)
    if since is not None:
        stmt = stmt.where(table.c.created_at >= since)
    with rt.session() as s:
        return [dict(r) for r in s.execute(stmt).mappings()]


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
        env = {"ORZBOB_TEST_CLOCK": "true", "BILLING_ENABLED": "false", "ORZBOB_RUN_JOBS": "false"}
        with serve(url, env) as (base, _):
            jobs = [(base, token, str(inst[n % len(inst)]), seconds) for n in range(workers)]
            with Timer() as t, ProcessPoolExecutor(workers) as pool:
                total = sum(pool.map(_beat_loop, jobs))
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
    p.add_argument("--fleet", type=int, default=100_000, help="open segments of the pass")
    p.add_argument("--spend-limited", type=float, default=0.1, help="share of orgs")
    p.add_argument("--quick", action="store_true")
    a, _ = p.parse_known_args(argv)
    if a.quick:
        # A quarter of the fleet: the full pass's load and four passes take most of a minute.
        a.passes, a.heartbeat_seconds, a.fleet = 10, 2.0, min(a.fleet, 25_000)
    # The service path as the worker runs it: limiters, plan-change cuts and alert hooks.
    install_hooks()
    print("metering: usage records written")
    bench_records("sqlite", a.orgs, a.instances_per_org, a.passes)
    if postgres_available():
        bench_records("postgresql", a.orgs, a.instances_per_org, a.passes)
        bench_fleet_pass(a.fleet, a.spend_limited)
    else:
        row("postgresql", "skipped: PostgreSQL unreachable")
    print("metering: heartbeats")
    if a.heartbeat_seconds > 0:
        bench_heartbeats(a.heartbeat_seconds, a.heartbeat_clients)
