from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class PolarState(StrEnum):
    """Where a credit stands on its way to the customer's Polar invoice (an outbox)."""

    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"


class CreditGrant(Base):
    """Money support gave back to an org, in cents. It reduces the estimate of the period it
    was granted in; what that period's bill cannot absorb carries into the next ones.

    Grants are never edited or deleted; only the `polar_*` delivery columns move."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        Index("ix_credit_grants_org_created", "org_id", "created_at"),
        Index(
            "ix_credit_grants_polar_pending",
            "id",
            postgresql_where=text("polar_state = 'pending'"),
            sqlite_where=text("polar_state = 'pending'"),
        ),
        # A retried request with the same key is the same grant, never a second one.
        Index("uq_credit_grants_org_idempotency_key", "org_id", "idempotency_key", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    granted_by_token_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_tokens.id"))
    granted_by_role: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # The billing period the grant was made in (the one whose estimate it reduces first).
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_at: Mapped[datetime]
    polar_state: Mapped[str] = mapped_column(String(16), default=PolarState.PENDING.value)
    polar_attempts: Mapped[int] = mapped_column(default=0)
    polar_error: Mapped[str | None] = mapped_column(Text)
    # What Polar calls it once applied (e.g. the discount id), for support to look up.
    polar_reference: Mapped[str | None] = mapped_column(String(200))
    polar_applied_at: Mapped[datetime | None]
    # The Polar discount this grant was put on, recorded before the discount is attached: if
    # an invoice redeems it, the grant is spent even when the run died before marking it.
    polar_discount_id: Mapped[str | None] = mapped_column(String(64))
