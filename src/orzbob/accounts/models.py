from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"
    SUPPORT_L1 = "support_l1"
    SUPPORT_L2 = "support_l2"
    ENGINEERING = "engineering"
    # The control plane that gathers instance agents' heartbeats: may beat for any org's
    # instances (POST /v1/heartbeats) and nothing else.
    FLEET = "fleet"


ORG_ROLES = (Role.MEMBER, Role.ADMIN)
STAFF_ROLES = (Role.SUPPORT_L1, Role.SUPPORT_L2, Role.ENGINEERING, Role.FLEET)


class OrgFacts(Protocol):
    """What a reader of an org's bill and caps needs of it: an `Org`, or a plain row a read
    model built without the ORM (`billing.repository`)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def plan_id(self) -> str: ...
    @property
    def signup_at(self) -> datetime: ...
    @property
    def spend_limit_cents(self) -> int | None: ...
    @property
    def subscription_period_start(self) -> datetime | None: ...
    @property
    def subscription_period_end(self) -> datetime | None: ...
    @property
    def deleted_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class OrgRow:  # an OrgFacts
    """An org's facts as plain values, read without the ORM: reads that look at hundreds of
    orgs at once (the billing read, a checkpoint batch) spent more loading them as entities
    than on the rest of their statement."""

    id: uuid.UUID
    name: str
    plan_id: str
    signup_at: datetime
    spend_limit_cents: int | None
    subscription_period_start: datetime | None
    subscription_period_end: datetime | None
    deleted_at: datetime | None


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    billing_emails: Mapped[list[str]]
    plan_id: Mapped[str] = mapped_column(String(64))
    signup_at: Mapped[datetime]
    spend_limit_cents: Mapped[int | None]
    polar_customer_id: Mapped[str | None] = mapped_column(String(64))
    # The current billing period of the org's Polar subscription, when one is known.
    polar_subscription_id: Mapped[str | None] = mapped_column(String(64))
    subscription_period_start: Mapped[datetime | None]
    subscription_period_end: Mapped[datetime | None]
    # When the current (or last) Polar subscription started: an event for a subscription that
    # started earlier is a replaced one and never changes the plan (polar.subscriptions).
    polar_subscription_started_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


# The columns of an `OrgRow`, in its fields' order: `OrgRow(*row)` of a row selecting them.
ORG_ROW_COLUMNS = (
    Org.id,
    Org.name,
    Org.plan_id,
    Org.signup_at,
    Org.spend_limit_cents,
    Org.subscription_period_start,
    Org.subscription_period_end,
    Org.deleted_at,
)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_org_id", "org_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orgs.id"))
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
