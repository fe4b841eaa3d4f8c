from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class AlertKind(StrEnum):
    ALLOWANCE = "allowance"
    SPEND_LIMIT = "spend_limit"


class AlertState(StrEnum):
    PENDING = "pending"  # waiting for the sender (or for a retry)
    SENT = "sent"  # the SMTP server accepted it
    COVERED = "covered"  # crossed together with a higher threshold, whose e-mail says it all
    UNDELIVERABLE = "undeliverable"  # no contact, or every contact refused by the server
    FAILED = "failed"  # the server refused the message for good (5xx)
    REARMED = "rearmed"  # a new plan or spend limit put it back out of reach; may fire again


# Alerts in these states are over: nothing will send them unless staff resend them.
FINAL_STATES = (AlertState.SENT, AlertState.FAILED, AlertState.UNDELIVERABLE)

THRESHOLDS: dict[AlertKind, tuple[int, ...]] = {
    AlertKind.ALLOWANCE: (50, 90, 100),
    AlertKind.SPEND_LIMIT: (80, 100),
}


class BudgetAlert(Base):
    """One threshold of one org in one period: the e-mail outbox row (docs/spec.md §5).

    Unique on (org, period, kind, threshold), written in the transaction that crossed it, so
    an alert exists at most once whatever crashes. Re-arming reuses the row (state `rearmed`)
    and a later crossing raises it again as a new generation with a new Message-ID.
    """

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("org_id", "period_start", "kind", "threshold"),
        Index(
            "ix_budget_alerts_pending",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    # What the percentage was of when it was crossed: the allowance in small-minutes, or the
    # spend limit in cents. A different basis now (new plan, new limit) may re-arm it.
    basis: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(default=1)
    covered_by_id: Mapped[uuid.UUID | None]
    # When this generation was raised (the service clock of the crossing transaction).
    created_at: Mapped[datetime]
    subject: Mapped[str] = mapped_column(String(400))
    # The numbers at the moment of crossing; the e-mail is rendered from them, so a resend
    # says exactly what the first attempt said.
    facts: Mapped[dict[str, Any]]
    message_id: Mapped[str] = mapped_column(String(200))
    recipients: Mapped[list[str]]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    # A sender's lease (real time): it is talking to SMTP about this row; no lock is held.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    rearmed_at: Mapped[datetime | None]
