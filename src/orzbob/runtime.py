"""The process-wide runtime: settings, database, clock, scheduler and catalog in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog, load_catalog
from orzbob.config import Settings
from orzbob.kit.clock import Clock, ManualClock, Scheduler, SystemClock
from orzbob.kit.db import make_engine, make_sessionmaker, session_scope

if TYPE_CHECKING:  # types only: the runtime holds these objects but never uses them itself
    from orzbob.alerts.sender import AlertSender
    from orzbob.metering.flusher import Flusher
    from orzbob.polar.client import PolarGateway
    from orzbob.polar.webhooks import WebhookVerifier


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    clock: Clock
    scheduler: Scheduler
    catalog: Catalog
    # Process-wide objects made on first use by the domains that own them.
    flusher: Flusher | None = None  # set by register_jobs when billing is enabled
    alert_sender: AlertSender | None = None
    polar_gateway: PolarGateway | None = None
    webhook_verifier: WebhookVerifier | None = None
    # Run when the API or the worker stops (the final flush).
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    # Follow the persisted test clock (API replicas without jobs, `orz worker` processes).
    shared_test_clock: bool = False

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        engine: Engine | None = None,
        catalog: Catalog | None = None,
    ) -> Runtime:
        engine = engine or make_engine(settings.database_url)
        if clock is None:
            clock = ManualClock() if settings.test_clock else SystemClock()
        if catalog is None:
            catalog = (
                load_catalog(settings.catalog_path)
                if settings.catalog_path
                else (default_catalog())
            )
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            read_sessions=make_sessionmaker(engine, read_only=True),
            clock=clock,
            scheduler=Scheduler(clock),
            catalog=catalog,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.sessions) as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only transaction (on SQLite it takes no write lock)."""
        with session_scope(self.read_sessions) as session:
            yield session

    @property
    def manual_clock(self) -> ManualClock | None:
        return self.clock if isinstance(self.clock, ManualClock) else None

    def every(self, name: str, seconds: int, fn: Callable[[Runtime], object]) -> None:
        """Register a periodic job that receives the runtime (its clock is already moved)."""
        self.scheduler.register(name, timedelta(seconds=seconds), lambda _at: fn(self))
