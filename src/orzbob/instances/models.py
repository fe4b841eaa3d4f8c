from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Reason(StrEnum):
    USER = "user"
    IDLE = "idle"
    CONTINUOUS_CAP = "continuous_cap"
    DAILY_CAP = "daily_cap"
    QUOTA_EXHAUSTED = "quota_exhausted"
    SPEND_LIMIT = "spend_limit"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    ADMIN = "admin"


# Legal moves of the state machine (docs/spec.md §2); `stopped` is final.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.STOPPED}),
    State.RUNNING: frozenset({State.PAUSED, State.STOPPED}),
    State.PAUSED: frozenset({State.RUNNING, State.STOPPED}),
    State.STOPPED: frozenset(),
}


class InstanceFacts(Protocol):
    """What the caps read of a running instance: an `Instance`, or a plain row."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def state_changed_at(self) -> datetime: ...
    @property
    def run_started_at(self) -> datetime | None: ...
    @property
    def last_active_at(self) -> datetime: ...


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_org_state", "org_id", "state"),
        Index("ix_instances_state_last_seen", "state", "last_seen_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    state_changed_at: Mapped[datetime]
    # Start of the current uninterrupted run: the continuous-run cap counts from here.
    run_started_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime]
    last_active_at: Mapped[datetime]
    # What was active at the last active heartbeat (ssh, ide, terminal, job, …): why an
    # instance did or did not go idle.
    last_active_source: Mapped[str | None] = mapped_column(String(32))
    stopped_at: Mapped[datetime | None]


class InstanceEvent(Base):
    """Append-only history of every transition, for support and for explaining a bill."""

    __tablename__ = "instance_events"
    __table_args__ = (Index("ix_instance_events_instance_at", "instance_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id"))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime]
