"""The audit log: append-only, written by every domain that moves money or changes access."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base, new_id


class AuditEntry(Base):
    """Append-only record of every money-relevant staff or admin action.

    No code path updates or deletes a row; the migration also makes the database refuse it."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # Pages are read newest first by (time-ordered) id, per org or across all orgs.
        Index("ix_audit_log_org_id", "org_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    at: Mapped[datetime]
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orgs.id"))
    actor_token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_tokens.id"))
    actor_role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
