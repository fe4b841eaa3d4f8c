"""Every query on the audit log. Insert and read only: nothing here updates or deletes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from orzbob.audit.models import AuditEntry


class AuditRepository:
    def add(self, session: Session, entry: AuditEntry) -> AuditEntry:
        session.add(entry)
        session.flush()
        return entry

    def newest(
        self,
        session: Session,
        *,
        org_id: uuid.UUID | None,
        action: str | None,
        before: uuid.UUID | None,
        limit: int,
    ) -> Sequence[AuditEntry]:
        """Newest first. Ids are time-ordered (UUIDv7), so `before` pages backwards."""
        stmt = select(AuditEntry)
        if org_id is not None:
            stmt = stmt.where(AuditEntry.org_id == org_id)
        if action is not None:
            stmt = stmt.where(AuditEntry.action == action)
        if before is not None:
            stmt = stmt.where(AuditEntry.id < before)
        return session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)).all()


audit_repository = AuditRepository()
