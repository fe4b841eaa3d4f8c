"""Shared benchmark plumbing: scratch databases, a migrated runtime and the API served in a
process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx

from orzbob.config import Settings
from orzbob.kit.clock import ManualClock
from orzbob.kit.db import make_engine
from orzbob.kit.migrate import upgrade
from orzbob.runtime import Runtime

PG_ADMIN = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Scratch databases are named with this prefix (several benches may share one server).
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "orzbob_bench_")
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(url: str, env: dict[str, str], *, workers: int = 1) -> Iterator[tuple[str, int]]:
    """The API on `url`'s database in a process of its own (`orz server`; several workers
    under uvicorn's own supervisor), with `env` over this process's environment; yields its
    base URL and pid once `/healthz` answers, and stops it after."""
    port = free_port()
    args = [sys.executable, "-m", "orzbob.cli", "server", "--port", str(port)]
    if workers > 1:
        args = [sys.executable, "-m", "uvicorn", "--factory", "orzbob.api.app:create_app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                "--no-access-log", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(
        args,
        env={**os.environ, "DATABASE_URL": url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the API exited with {proc.returncode}") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("the API did not answer /healthz within 30 s")
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


@contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL of `kind` ("sqlite" or "postgresql"), removed after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            yield url
        return
    import psycopg

    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settle_postgres() -> None:
    """Write out what earlier loads left in PostgreSQL's buffers (`CHECKPOINT`) before
    something is timed: otherwise the checkpointer writes gigabytes of a previous section's
    load while the next one measures. Nothing without PostgreSQL or the right to do it."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute("CHECKPOINT")
    except Exception:
        return


def vacuum(url: str) -> None:
    """`VACUUM (ANALYZE)` of a scratch PostgreSQL database: what autovacuum does on a
    production server within its minute's naptime. The PostgreSQL this bench has run on
    was configured with `autovacuum = off` (`autovacuum_state` says), and without it every
    update's old row version stays: after the load of 10,000 orgs and the single-heartbeat
    load the instances table held 700,000 dead rows beside its 20,000 live ones (103 MB),
    and bulk beats ran at half their rate. Called where a section's writes are done and the
    next figure is about to be timed, never inside a timed loop; nothing on SQLite."""
    if not url.startswith("postgresql"):
        return
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def autovacuum_state() -> str:
    """'on' or 'off', as the PostgreSQL server reports it; '' without PostgreSQL."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW autovacuum").fetchone()
            return str(row[0]) if row else ""
    except Exception:
        return ""


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


def make_runtime(url: str) -> Runtime:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        env="test",
        test_clock=True,
        run_jobs=False,
    )
    return Runtime.create(settings, clock=ManualClock(T0))


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def row(label: str, value: str) -> None:
    print(f"  {label:<58} {value}")


# -- the one table every section feeds -------------------------------------------------------
RESULTS: list[dict[str, object]] = []


def record(
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: tuple[str, float] | None = None,
    target: float | None = None,
    minimum: float | None = None,
    limit: float | None = None,
    note: str = "",
) -> None:
    """One figure for the closing table: a ratio `target` against a same-run `baseline`,
    or an absolute `minimum` (at least) or `limit` (at most)."""
    ratio = value / baseline[1] if baseline and baseline[1] else None
    if target is not None and ratio is not None:
        goal, met = f"≥ {target:.0%} of {baseline[0] if baseline else ''}", ratio >= target
    elif minimum is not None:
        goal, met = f"≥ {minimum:,.0f} {unit}", value >= minimum
    elif limit is not None:
        goal, met = f"≤ {limit:,.2f} {unit}", value <= limit
    else:
        goal, met = "", None
    RESULTS.append(
        {
            "figure": figure,
            "value": round(value, 3),
            "unit": unit,
            "baseline": None if baseline is None else {"name": baseline[0], "value": baseline[1]},
            "ratio": None if ratio is None else round(ratio, 3),
            "target": goal,
            "met": met,
            "note": note,
        }
    )
    row(figure, f"{value:,.2f} {unit}" + (f" ({note})" if note else ""))


def print_table() -> None:
    if not RESULTS:
        return
    print("\n== summary")
    print(f"  {'figure':<56} {'value':>20} {'ratio':>6}  {'target':<30} met")
    for r in RESULTS:
        value = f"{r['value']:,.2f} {r['unit']}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]  # type: ignore[index]
        print(f"  {r['figure']!s:<56} {value:>20} {ratio:>6}  {r['target']!s:<30} {met}")
