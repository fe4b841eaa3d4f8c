from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class WebhookDelivery(Base):
    """Every Polar webhook delivery, keyed by its `webhook-id` (stable across retries), so
    each is processed at most once."""

    __tablename__ = "polar_webhook_deliveries"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]


class PlanChangeReason(StrEnum):
    CANCELED = "canceled"  # cancel at period end: access continues until then
    ENDED = "ended"  # revoked, unpaid or expired: docs/spec.md §7 still waits for the period end


class ScheduledPlanChange(Base):
    """A plan change that takes effect later: a canceled or revoked subscription returns the
    org to the default plan at the end of the period it paid for (docs/spec.md §7).

    At most one is pending per org; rows are kept once applied or canceled, as history.
    """

    __tablename__ = "polar_scheduled_plan_changes"
    __table_args__ = (
        Index(
            "uq_polar_scheduled_plan_changes_pending_org",
            "org_id",
            unique=True,
            postgresql_where=text("applied_at IS NULL AND canceled_at IS NULL"),
            sqlite_where=text("applied_at IS NULL AND canceled_at IS NULL"),
        ),
        Index(
            "ix_polar_scheduled_plan_changes_pending_due",
            "effective_at",
            postgresql_where=text("applied_at IS NULL AND canceled_at IS NULL"),
            sqlite_where=text("applied_at IS NULL AND canceled_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    plan_id: Mapped[str] = mapped_column(String(64))
    effective_at: Mapped[datetime]
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    applied_at: Mapped[datetime | None]
    canceled_at: Mapped[datetime | None]


class ReconcileRun(Base):
    """One comparison of the ledger with Polar's events, kept so staff can read the latest
    report and the period-close job knows which periods it has already checked."""

    __tablename__ = "polar_reconcile_runs"
    __table_args__ = (
        Index("ix_polar_reconcile_runs_finished", "finished_at"),
        Index("ix_polar_reconcile_runs_scope_org_period", "scope", "org_id", "window_start"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # `daily` (the open periods), `period_close` (one org's closed period) or `manual`.
    scope: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orgs.id"))
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # Minutes Polar and the ledger disagree on, pending records included.
    drift_minutes: Mapped[int] = mapped_column(default=0)
    summary: Mapped[dict[str, Any]]
    items: Mapped[dict[str, Any]]
