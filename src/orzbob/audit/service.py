"""The append-only audit log: who changed what about an org's money, and why."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from orzbob.accounts.service import Principal
from orzbob.audit.models import AuditEntry
from orzbob.audit.repository import audit_repository


class AuditService:
    """Only `record` writes, and it only inserts: there is deliberately no update or delete."""

    def record(
        self,
        session: Session,
        *,
        action: str,
        actor: Principal | None,
        org_id: uuid.UUID | None,
        now: datetime,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            at=now,
            org_id=org_id,
            actor_token_id=actor.token_id if actor else None,
            # Changes made straight against the database (the `orz admin` CLI) have no token.
            actor_role=actor.role.value if actor else "cli",
            action=action,
            reason=reason,
            details=details or {},
        )
        return audit_repository.add(session, entry)

    def entries(
        self,
        session: Session,
        *,
        org_id: uuid.UUID | None = None,
        action: str | None = None,
        before: uuid.UUID | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEntry]:
        """Newest first; `before` (an entry id) pages backwards."""
        return audit_repository.newest(
            session, org_id=org_id, action=action, before=before, limit=limit
        )


audit_service = AuditService()
