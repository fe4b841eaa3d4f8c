"""Shared fixtures. The schema is built by the real migrations, on SQLite by default or on
PostgreSQL when TEST_DATABASE_URL is set; every test starts with empty tables."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from orzbob.accounts.models import Role
from orzbob.accounts.service import account_service
from orzbob.alerts.local_sink import SinkServer
from orzbob.api.app import create_app
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.config import Settings
from orzbob.hooks import install_hooks
from orzbob.kit.clock import ManualClock
from orzbob.kit.db import Base, make_engine
from orzbob.kit.migrate import upgrade
from orzbob.runtime import Runtime
from tests.proof.processes import scratch_database

T0 = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)

# pytest-xdist gives its workers COLUMNS=80, and a Rich console reads COLUMNS once, when it is
# created (the CLI's, at import): tables would stay 80 columns wide even in a test that sets
# its own width.
os.environ.pop("COLUMNS", None)


def soak_scale() -> float:
    """Long fault and soak tests shrink by this factor in CI (ORZBOB_SOAK_SCALE)."""
    return float(os.environ.get("ORZBOB_SOAK_SCALE", "1"))


@pytest.fixture(scope="session", autouse=True)
def _installed_hooks() -> None:
    """The hooks every process installs (the app and the job runner do), so a test that calls
    a service directly sees what production does: credits in the quota status, cap checks,
    alerts."""
    install_hooks()


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite in the session's temporary folder (one per xdist worker), or the PostgreSQL
    database TEST_DATABASE_URL names; an xdist worker gets its own database beside it, so
    workers never truncate each other's tables."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        path: Path = tmp_path_factory.mktemp("db") / "test.db"
        yield f"sqlite:///{path}"
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield url
        return
    # Named after the given database, on the same server.
    with scratch_database(url, f"{make_url(url).database}_{worker}") as own:
        yield own


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    if eng.dialect.name == "postgresql":
        with eng.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def truncate_all(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def statements(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements sent; on PostgreSQL, "(autocommit)" after those sent outside a
    transaction (no BEGIN before, no COMMIT after). PostgreSQL's are seen at psycopg's
    cursor, since the hot paths send some to the driver past SQLAlchemy
    (`kit.db.StatementConnection`); SQLAlchemy sends its own through the same cursor."""
    seen: list[str] = []
    if runtime.engine.dialect.name == "postgresql":
        import psycopg

        execute = psycopg.Cursor.execute

        def sent(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query.decode() if isinstance(query, bytes) else str(query)  # `RawCursor`'s
            seen.append(text + (" (autocommit)" if cursor.connection.autocommit else ""))
            return execute(cursor, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", sent)
        yield seen
        return

    def record(conn: Any, *args: Any) -> None:
        seen.append(str(args[1]))

    event.listen(runtime.engine, "before_cursor_execute", record)
    yield seen
    event.remove(runtime.engine, "before_cursor_execute", record)


@pytest.fixture
def smtp() -> Iterator[SinkServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""
    with SinkServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=db_url,
        env="test",
        test_clock=True,
        billing_enabled=False,
        run_jobs=False,
    )


@pytest.fixture
def catalog() -> Catalog:
    """The shipped catalog; a test module overrides this fixture to change it."""
    return default_catalog()


def without_time_caps(catalog: Catalog) -> Catalog:
    """The catalog with the idle, continuous and daily caps out of reach, for tests of the
    money arithmetic that run one instance for days on end (caps have their own tests)."""
    plans = tuple(
        p.model_copy(
            update={
                "idle_timeout_minutes": 10**6,
                "continuous_cap_hours": 10**5,
                "daily_cap_instance_hours": 10**5,
            }
        )
        for p in catalog.plans
    )
    return catalog.model_copy(update={"plans": plans})


@pytest.fixture
def runtime(
    settings: Settings, engine: Engine, clock: ManualClock, catalog: Catalog
) -> Iterator[Runtime]:
    rt = Runtime.create(settings, clock=clock, engine=engine, catalog=catalog)
    yield rt
    truncate_all(engine)


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back at the end of the test (no truncation needed): for
    tests of repositories and services, which never commit. Code that commits on its own (the
    API, jobs, the CLI) uses `runtime` instead."""
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def rollback_runtime(
    settings: Settings, engine: Engine, clock: ManualClock, catalog: Catalog
) -> Iterator[Runtime]:
    """A runtime whose every transaction is a savepoint in one outer transaction that the
    test rolls back: no truncation, nothing written to disk. For tests that drive services
    through `runtime.session()` on one thread and need no other connection to see their
    commits (not the API, jobs in threads, or subprocesses: those use `runtime`)."""
    rt = Runtime.create(settings, clock=clock, engine=engine, catalog=catalog)
    with engine.connect() as conn:
        outer = conn.begin()
        rt.sessions = rt.read_sessions = sessionmaker(
            bind=conn,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
            autoflush=True,
        )
        try:
            yield rt
        finally:
            outer.rollback()


@pytest.fixture
def app(runtime: Runtime):  # type: ignore[no-untyped-def]
    return create_app(runtime)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


@dataclass
class OrgHandle:
    id: uuid.UUID
    token: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_org(runtime: Runtime) -> Callable[..., OrgHandle]:
    def factory(
        name: str = "Acme",
        plan: str | None = None,
        email: str = "ops@acme.test",
        role: Role = Role.ADMIN,
    ) -> OrgHandle:
        with runtime.session() as session:
            org = account_service.create_org(
                session,
                name=name,
                billing_emails=[email],
                plan_id=plan,
                catalog=runtime.catalog,
                now=runtime.clock.now(),
            )
            _, raw = account_service.create_token(
                session, org_id=org.id, role=role, name="test", now=runtime.clock.now()
            )
            return OrgHandle(id=org.id, token=raw, name=name)

    return factory


@pytest.fixture
def staff_headers(runtime: Runtime) -> Callable[[str], dict[str, str]]:
    def factory(role: str = "engineering") -> dict[str, str]:
        with runtime.session() as session:
            _, raw = account_service.create_token(
                session, org_id=None, role=role, name="staff", now=runtime.clock.now()
            )
        return {"Authorization": f"Bearer {raw}"}

    return factory


@pytest.fixture
def with_jobs(runtime: Runtime) -> Runtime:
    """The runtime with every periodic job registered, driven by `advance`."""
    from orzbob.jobs import register_jobs

    register_jobs(runtime)
    return runtime


def advance(runtime: Runtime, seconds: float) -> None:
    clock = runtime.manual_clock
    assert clock is not None
    runtime.scheduler.advance(clock, seconds)
