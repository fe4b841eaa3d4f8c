"""The API under load, built as a client would build it: orgs and instances created through
the API (`POST /v1/admin/orgs` hands back each org's first token), then `wrk` against
`/healthz` (the same-run baseline), `GET /v1/billing` and single heartbeats, a Python client
for bulk heartbeats, and the API's resident memory after the billing load.

One uvicorn worker (uvicorn[standard]) on PostgreSQL unless `--sqlite`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import (
    autovacuum_state,
    postgres_available,
    record,
    scratch_database,
    serve,
    vacuum,
)
from orzbob.accounts.service import account_service
from orzbob.kit.clock import utcnow
from orzbob.kit.db import make_engine, make_sessionmaker, session_scope


@contextmanager
def serve_for_load(url: str, *, workers: int = 1) -> Iterator[tuple[str, int]]:
    # A frozen test clock in a process that owns the jobs: none falls due during the load
    # (time stands still), and no request pays for following a clock another process may
    # advance (ORZBOB_RUN_JOBS=false with a test clock: a test deployment's replicas).
    env = {"ORZBOB_TEST_CLOCK": "true", "BILLING_ENABLED": "false", "ORZBOB_RUN_JOBS": "true"}
    with serve(url, env, workers=workers) as served:
        yield served


def staff_token(url: str) -> str:
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, raw = account_service.create_token(
            s, org_id=None, role="engineering", name="bench", now=utcnow()
        )
        _, fleet = account_service.create_token(
            s, org_id=None, role="fleet", name="bench fleet", now=utcnow()
        )
    engine.dispose()
    return raw + " " + fleet


def build_load(base: str, staff: str, orgs: int, per_org: int) -> list[tuple[str, list[str]]]:
    """Orgs and running instances through the API, one org in ten with a spend limit;
    returns (token, instance ids) per org."""

    def one(i: int) -> tuple[str, list[str]]:
        with httpx.Client(base_url=base, timeout=30) as c:
            r = c.post(
                "/v1/admin/orgs",
                headers={"Authorization": f"Bearer {staff}"},
                json={
                    "name": f"bench{i}",
                    "billing_emails": [f"b{i}@bench.test"],
                    "plan": "base-plus-usage",
                },
            )
            r.raise_for_status()
            token = r.json()["token"]
            if i % 10 == 0:  # one org in ten with a spend limit, far above its bill
                r = c.put(
                    "/v1/billing/spend-limit",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"amount": "1000.00"},
                )
                r.raise_for_status()
            ids = []
            for _ in range(per_org):
                r = c.post(
                    "/v1/instances",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"tier": "small"},
                )
                r.raise_for_status()
                ids.append(r.json()["id"])
            return token, ids

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(orgs)))


_LUA = """
local items = {%s}
local method, body = "%s", %s
local n = 0
request = function()
  n = n + 1
  local it = items[(n %% #items) + 1]
  local path = string.gsub("%s", "{id}", it[2])
  return wrk.format(method, path, {["Authorization"] = "Bearer " .. it[1],
                                   ["Content-Type"] = "application/json"}, body)
end
"""


def wrk(
    base: str,
    path: str,
    seconds: int,
    items: list[tuple[str, str]],
    *,
    method: str = "GET",
    body: str | None = None,
) -> tuple[float, float]:
    """(requests/s, p99 ms) from wrk with 32 connections on 2 threads."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        listed = ",".join(f'{{"{t}","{i}"}}' for t, i in items) or '{"",""}'
        f.write(_LUA % (listed, method, f"[[{body}]]" if body else "nil", path))
        script = f.name
    try:
        out = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", script, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        Path(script).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  warning: {non2xx.group(1)} non-2xx responses on {path}")
    return rps, float(p99.group(1)) * scale


def bulk_rate(base: str, fleet: str, ids: list[str], seconds: float, clients: int) -> float:
    """Beats/s from `clients` threads posting batches of 1,000 back to back. The bodies are
    encoded before the clock starts, as wrk's are: the client shares the server's two cores,
    and encoding 1,000 beats per request in Python would be measured as the server's time."""
    batches = [ids[i : i + 1000] for i in range(0, len(ids), 1000)]
    bodies = [
        (
            len(batch),
            json.dumps(
                {"beats": [{"instance_id": i, "active": True, "source": "ide"} for i in batch]}
            ).encode(),
        )
        for batch in batches
    ]
    headers = {"Authorization": f"Bearer {fleet}", "Content-Type": "application/json"}

    def loop(k: int) -> int:
        done = 0
        deadline = time.perf_counter() + seconds
        with httpx.Client(base_url=base, headers=headers) as c:
            j = k
            while time.perf_counter() < deadline:
                n, body = bodies[j % len(bodies)]
                r = c.post("/v1/heartbeats", content=body, timeout=60)
                r.raise_for_status()
                done += n
                j += clients
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(loop, range(clients)))
    return total / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children (uvicorn's workers)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += rss_mb(int(child))
    return total


def main(flags: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench http")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sqlite", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    a, _ = p.parse_known_args(flags)
    if shutil.which("wrk") is None:
        print("http: wrk is not installed (make bench installs it): skipped")
        return
    kind = "sqlite" if a.sqlite or not postgres_available() else "postgresql"
    orgs, seconds = (500, 5) if a.quick else (10_000, 15)
    n = a.workers
    label = "" if n == 1 else f" ({n} workers)"
    print(f"== API under load ({kind}, {n} uvicorn worker{'s' * (n > 1)}, {orgs:,} orgs)")
    if kind == "postgresql":
        state = autovacuum_state() or "unknown"
        print(f"  the server's autovacuum: {state} (the bench vacuums between loads)")
    with scratch_database(kind) as url:
        staff, fleet = staff_token(url).split(" ")
        with serve_for_load(url, workers=n) as (base, pid):
            load = build_load(base, staff, orgs, 2)
            # Each figure after a vacuum, as autovacuum keeps a live database (`vacuum`).
            vacuum(url)
            health, health_p99 = wrk(base, "/healthz", seconds, [])
            record(f"/healthz{label}", health, "req/s", note=f"p99 {health_p99:.1f} ms")
            billing, billing_p99 = wrk(base, "/v1/billing", seconds, [(t, "") for t, _ in load])
            record(
                f"GET /v1/billing{label}",
                billing,
                "req/s",
                baseline=(f"/healthz{label}", health),
                target=0.25,
                note=f"p99 {billing_p99:.1f} ms ({billing_p99 / health_p99:.1f}x /healthz "
                "p99; target ≤ 5x)",
            )
            record(
                f"API resident memory after the billing load{label}",
                rss_mb(pid),
                "MB",
                limit=300 * n,
            )
            vacuum(url)
            beats, _ = wrk(
                base,
                "/v1/instances/{id}/heartbeat",
                seconds,
                [(t, ids[0]) for t, ids in load],
                method="POST",
                body='{"active": true, "source": "ide"}',
            )
            record(
                f"single heartbeat{label}",
                beats,
                "req/s",
                baseline=(f"/healthz{label}", health),
                target=0.40,
            )
            every = [i for _, ids in load for i in ids]
            vacuum(url)
            bulk = bulk_rate(base, fleet, every, seconds, clients=4)
            record(f"bulk heartbeats (1,000 per request){label}", bulk, "beats/s", minimum=20_000)
