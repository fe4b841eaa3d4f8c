"""GET /v1/billing with 10,000 orgs: latency and throughput at 10 million usage records in
PostgreSQL against the same at 10 thousand. The read is O(1) in records (it reads rollups),
so the two should match; a scan would show up here as a 1000× gap.

Orgs, tokens, instances, records and their rollups are bulk-loaded with COPY, rollups computed
from the generated records by the same allocation rules, then checked against the records.
`--quick` shrinks everything (1,000 orgs, 200k records, 5 s of load)."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import time
import uuid
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from bench.common import Timer, postgres_available, row, scratch_database, serve
from orzbob.accounts.service import hash_token
from orzbob.catalog.service import default_catalog
from orzbob.kit.db import new_id
from orzbob.quota.periods import anchored_period

PLAN = "base-plus-usage"


class Ids:
    """Time-ordered UUIDs without the per-id cost of uuid7 (10 million of them)."""

    def __init__(self) -> None:
        self.base = new_id().int & ~((1 << 62) - 1)
        self.n = 0

    def __call__(self) -> uuid.UUID:
        self.n += 1
        return uuid.UUID(int=self.base + self.n)

    def text(self) -> str:
        """The next id as PostgreSQL's undashed text form (no UUID object to build)."""
        self.n += 1
        return f"{self.base + self.n:032x}"


def load(url: str, orgs: int, records: int) -> list[str]:
    """Bulk-load `orgs` orgs on the base plan with `records` usage records in the current
    period, plus exactly the rollups allocation would have kept. Returns one token per org."""
    import psycopg

    catalog = default_catalog()
    plan = catalog.plan(PLAN)
    tiers = [(t.id, t.small_hour_weight) for t in catalog.tiers]
    now = datetime.now(UTC)
    signup = now - timedelta(days=20)
    period = anchored_period(signup.day, now)
    span = int((now - timedelta(hours=1) - period.start).total_seconds() // 60)
    ids, tokens = Ids(), []
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        # The generated rows are consistent by construction; skipping the per-row foreign-key
        # triggers is what lets COPY run at full speed.
        cur.execute("SET session_replication_role = replica")
        org_ids = [ids() for _ in range(orgs)]
        inst_ids = [ids() for _ in range(orgs)]
        seg_ids = [ids() for _ in range(orgs)]
        with cur.copy(
            "COPY orgs (id, name, billing_emails, plan_id, signup_at, created_at) FROM STDIN"
        ) as cp:
            for i, oid in enumerate(org_ids):
                cp.write_row((oid, f"org{i}", f'["o{i}@bench.test"]', PLAN, signup, signup))
        with cur.copy(
            "COPY api_tokens (id, org_id, role, name, token_hash, token_prefix, created_at) "
            "FROM STDIN"
        ) as cp:
            for oid in org_ids:
                raw = "orz_" + secrets.token_urlsafe(32)
                tokens.append(raw)
                cp.write_row((ids(), oid, "member", "bench", hash_token(raw), raw[:10], signup))
        with cur.copy(
            "COPY instances (id, org_id, name, tier, state, created_at, state_changed_at, "
            "last_seen_at, last_active_at) FROM STDIN"
        ) as cp:
            for oid, iid in zip(org_ids, inst_ids, strict=True):
                cp.write_row((iid, oid, "bench", "small", "paused", signup, now, now, now))
        with cur.copy(
            "COPY usage_segments (id, org_id, instance_id, tier, started_at, ended_at, "
            "emitted_minutes, counted_until) FROM STDIN"
        ) as cp:
            for oid, iid, sid in zip(org_ids, inst_ids, seg_ids, strict=True):
                cp.write_row((sid, oid, iid, "small", signup, signup, 0, signup))
        periods: list[tuple[Any, ...]] = []
        rollups: list[tuple[Any, ...]] = []
        days: list[tuple[Any, ...]] = []
        with cur.copy(
            "COPY usage_records (id, org_id, instance_id, segment_id, tier, plan_id, "
            "interval_start, interval_end, period_start, minutes, included_minutes, "
            "overage_minutes, billable_minutes, small_minutes, state, attempts, created_at, "
            "sent_at) FROM STDIN"
        ) as cp:
            # Rows go as preformatted text in large chunks: `write_row` per record made the
            # load client-bound (about 9 µs a row). Timestamps and days are memoised per minute.
            stamps: dict[int, str] = {}

            days_of: dict[int, date] = {}

            def stamp(minute: int) -> str:
                if (text_ := stamps.get(minute)) is None:
                    text_ = stamps[minute] = str(period.start + timedelta(minutes=minute))
                return text_

            def day_ending(minute: int) -> date:
                if (day := days_of.get(minute)) is None:
                    end = period.start + timedelta(minutes=minute, microseconds=-1)
                    day = days_of[minute] = end.date()
                return day

            head, start_text = f"\t{PLAN}\t", str(period.start)
            allowance = plan.included_small_minutes
            lines: list[str] = []
            per_org, extra = divmod(records, orgs)
            for o, oid in enumerate(org_ids):
                n = per_org + (1 if o < extra else 0)
                if n == 0:
                    continue
                step = span / n
                used, exhausted = 0, None
                sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
                daily: dict[date, int] = defaultdict(int)
                keys = f"\t{oid}\t{inst_ids[o]}\t{seg_ids[o]}\t"
                for i in range(n):
                    tier, weight = tiers[(o + i) % len(tiers)]
                    end_minute = int((i + 1) * step)
                    minutes = max(1, min(int(step), 1 + (i * 7 + o) % 40))
                    left = (allowance - used) // weight if used < allowance else 0
                    included = minutes if minutes < left else left
                    overage = minutes - included
                    used += included * weight
                    end = stamp(end_minute)
                    if exhausted is None and (overage or used >= allowance):
                        exhausted = period.start + timedelta(minutes=end_minute)
                    s = sums[tier]
                    s[0] += minutes
                    s[1] += included
                    s[2] += overage
                    s[3] += overage
                    s[4] += included * weight
                    daily[day_ending(end_minute)] += minutes
                    lines.append(
                        f"{ids.text()}{keys}{tier}{head}{stamp(end_minute - minutes)}\t{end}\t"
                        f"{start_text}\t{minutes}\t{included}\t{overage}\t{overage}\t"
                        f"{included * weight}\tsent\t1\t{end}\t{end}\n"
                    )
                if len(lines) >= 20_000:
                    cp.write("".join(lines))
                    lines.clear()
                periods.append((oid, period.start, period.end, used, exhausted, PLAN))
                rollups.extend((oid, period.start, t, *v) for t, v in sums.items())
                days.extend((oid, d, m) for d, m in daily.items())
            cp.write("".join(lines))
        for table, cols, data in (
            ("quota_periods", "org_id, period_start, period_end, used_small_minutes, "
             "exhausted_at, plan_id", periods),
            ("quota_tier_rollups", "org_id, period_start, tier, minutes, included_minutes, "
             "overage_minutes, billable_minutes, small_minutes", rollups),
            ("daily_usage", "org_id, day, minutes", days),
        ):  # fmt: skip
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for r in data:
                    cp.write_row(r)
        conn.commit()
        conn.autocommit = True
        cur.execute("ANALYZE")
        _check(cur, random.Random(1).sample(org_ids, min(3, orgs)))
    return tokens


def _check(cur: Any, sample: list[uuid.UUID]) -> None:
    """The loaded rollups equal a recomputation from the records (as the tests demand)."""
    for oid in sample:
        cur.execute(
            "SELECT tier, sum(minutes), sum(billable_minutes) FROM usage_records "
            "WHERE org_id = %s GROUP BY tier ORDER BY tier",
            (oid,),
        )
        recomputed = [tuple(r) for r in cur.fetchall()]
        cur.execute(
            "SELECT tier, minutes, billable_minutes FROM quota_tier_rollups "
            "WHERE org_id = %s ORDER BY tier",
            (oid,),
        )
        assert [tuple(r) for r in cur.fetchall()] == recomputed, f"rollups of {oid} drifted"


def _requests(job: tuple[str, list[str], float, float]) -> list[float]:
    """One load-generating process: GET /v1/billing back to back, a random org each time."""
    base, tokens, warmup, seconds = job
    rng = random.Random(os.getpid())
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        stop_warm = time.perf_counter() + warmup
        deadline = stop_warm + seconds
        while (start := time.perf_counter()) < deadline:
            token = tokens[rng.randrange(len(tokens))]
            r = client.get("/v1/billing", headers={"Authorization": f"Bearer {token}"})
            if r.status_code != 200:
                raise RuntimeError(f"GET /v1/billing: HTTP {r.status_code} {r.text[:200]}")
            if start >= stop_warm:
                latencies.append(time.perf_counter() - start)
    return latencies


def measure(url: str, tokens: list[str], seconds: float, clients: int) -> dict[str, float]:
    env = {"BILLING_ENABLED": "false", "ORZBOB_RUN_JOBS": "false"}
    with serve(url, env) as (base, _):
        jobs = [(base, tokens, 2.0, seconds)] * clients
        with ProcessPoolExecutor(clients) as pool:
            latencies = sorted(x for batch in pool.map(_requests, jobs) for x in batch)
    return {
        "requests": len(latencies),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rps": len(latencies) / seconds,
    }


def main(flags: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench billing", description=__doc__)
    p.add_argument("--orgs", type=int, default=10_000)
    p.add_argument("--records", type=int, default=10_000_000, help="the large size")
    p.add_argument("--small-records", type=int, default=10_000, help="the small size")
    p.add_argument("--seconds", type=float, default=15.0, help="measured load per size")
    p.add_argument("--clients", type=int, default=2, help="load-generating processes")
    p.add_argument("--quick", action="store_true", help="1,000 orgs, 200k records, 5 s")
    args, _ = p.parse_known_args(flags)  # flags meant for other sections are ignored
    if args.quick:
        args.orgs, args.records, args.seconds = 1_000, 200_000, 5.0
    print("billing: GET /v1/billing on PostgreSQL (uvicorn, 1 worker; closed-loop clients)")
    if not postgres_available():
        print("  skipped: PostgreSQL is not reachable (PG_ADMIN_URL)")
        return
    print(
        f"  ran: {args.orgs:,} orgs; {args.small_records:,} and {args.records:,} usage records; "
        f"{args.clients} client processes × {args.seconds:g} s after a 2 s warm-up"
    )
    for size in (args.small_records, args.records):
        with scratch_database("postgresql") as url:
            with Timer() as t:
                tokens = load(url, args.orgs, size)
            row(f"{size:>12,} records: bulk load + rollups (COPY)", f"{t.seconds:8.1f} s")
            m = measure(url, tokens, args.seconds, args.clients)
        row(
            f"{size:>12,} records: GET /v1/billing",
            f"p50 {m['p50']:6.2f} ms  p99 {m['p99']:6.2f} ms  {m['rps']:7,.0f} req/s "
            f"({m['requests']:,} requests)",
        )
