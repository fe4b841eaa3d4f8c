"""The cap sweep over a fleet of running instances: with none to pause and with 10 % to pause,
at two sizes, against a same-run baseline (one plain read of every running instance)."""

from __future__ import annotations

import argparse
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from bench.common import Timer, make_runtime, postgres_available, record, row, scratch_database
from orzbob.accounts.models import Org
from orzbob.hooks import install_hooks
from orzbob.instances.models import Instance
from orzbob.kit.db import new_id
from orzbob.metering.models import UsageSegment
from orzbob.runtime import Runtime
from orzbob.throttle.tasks import sweep_caps

PER_ORG = 4
BATCH = 5000


def _fleet(rt: Runtime, instances: int) -> list[uuid.UUID]:
    """`instances` running instances, four per base-plus-usage org, active a minute ago; one
    org in ten has a spend limit far above its bill (the sweep bounds each such bill)."""
    now = rt.clock.now()
    recent = now - timedelta(minutes=1)
    org_ids = [new_id() for _ in range(instances // PER_ORG)]
    orgs = [
        {
            "id": o,
            "name": f"org{i}",
            "billing_emails": [f"o{i}@bench.test"],
            "plan_id": "base-plus-usage",
            "signup_at": now - timedelta(days=3),
            "spend_limit_cents": 100_000 if i % 10 == 0 else None,
            "created_at": now,
        }
        for i, o in enumerate(org_ids)
    ]
    insts, segs = [], []
    for o in org_ids:
        for _ in range(PER_ORG):
            iid = new_id()
            insts.append(
                {
                    "id": iid,
                    "org_id": o,
                    "name": "bench",
                    "tier": "small",
                    "state": "running",
                    "created_at": now - timedelta(hours=1),
                    "state_changed_at": now - timedelta(hours=1),
                    "run_started_at": now - timedelta(hours=1),
                    "last_seen_at": recent,
                    "last_active_at": recent,
                }
            )
            segs.append(
                {
                    "id": new_id(),
                    "org_id": o,
                    "instance_id": iid,
                    "tier": "small",
                    "started_at": now - timedelta(hours=1),
                    "ended_at": None,
                    "emitted_minutes": 60,
                    "counted_until": now - timedelta(hours=1) + timedelta(minutes=60),
                }
            )
    with rt.session() as s:
        for table, rows in ((Org, orgs), (Instance, insts), (UsageSegment, segs)):
            for i in range(0, len(rows), BATCH):
                s.execute(insert(table), rows[i : i + BATCH])
    return org_ids


def _baseline(rt: Runtime) -> float:
    with Timer() as t, rt.read_session() as s:
        s.execute(
            select(Instance.id, Instance.org_id, Instance.last_active_at).where(
                Instance.state == "running"
            )
        ).all()
    return t.seconds


def _sweep(rt: Runtime) -> tuple[float, Any]:
    with Timer() as t:
        result = sweep_caps(rt)
    return t.seconds, result


def run_size(kind: str, instances: int) -> dict[str, float]:
    with scratch_database(kind) as url:
        rt = make_runtime(url)
        install_hooks()
        org_ids = _fleet(rt, instances)
        base = min(_baseline(rt) for _ in range(3))
        none_s = min(_sweep(rt)[0] for _ in range(3))
        idle = org_ids[::10]
        with rt.session() as s:
            s.execute(
                update(Instance)
                .where(Instance.org_id.in_(idle))
                .values(last_active_at=rt.clock.now() - timedelta(hours=2))
            )
        some_s, paused = _sweep(rt)
        rt.engine.dispose()
    label = f"{kind}, {instances:,} running"
    row(f"{label}: baseline read of running instances", f"{base * 1000:8.1f} ms")
    row(f"{label}: sweep, none to pause", f"{none_s * 1000:8.1f} ms ({none_s / base:5.1f}x)")
    row(
        f"{label}: sweep, 10 % to pause ({paused:,} paused)",
        f"{some_s * 1000:8.1f} ms ({some_s / base:5.1f}x)",
    )
    record(
        f"cap sweep, {instances:,} running ({kind}), none to pause",
        none_s,
        "s",
        limit=1.0 if kind == "postgresql" and instances >= 100_000 else None,
        note=f"10 % of orgs spend-limited; 10 % to pause: {some_s:.1f} s",
    )
    return {"none": none_s, "some": some_s, "base": base}


def main(flags: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench throttle")
    parser.add_argument("--sqlite-size", type=int, default=10_000)
    parser.add_argument("--pg-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--quick", action="store_true")
    args, _ = parser.parse_known_args(flags)
    if args.quick:
        args.sqlite_size, args.pg_sizes = 2_000, [10_000]
    print("== cap sweep (target: 100k running on PostgreSQL, none to pause, under 1 s)")
    run_size("sqlite", args.sqlite_size)
    if not postgres_available():
        row("PostgreSQL", "not reachable: skipped")
        return
    results = [run_size("postgresql", n) for n in args.pg_sizes]
    if len(results) == 2:
        small, large = results
        growth = large["none"] / small["none"]
        sizes = args.pg_sizes[1] / args.pg_sizes[0]
        row(f"postgresql: growth from {args.pg_sizes[0]:,} to {args.pg_sizes[1]:,}", "")
        row("  sweep time ratio / size ratio", f"{growth:.1f} / {sizes:.0f}")
