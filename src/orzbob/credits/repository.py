"""Every query on credit grants."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from orzbob.credits.models import CreditGrant, PolarState
from orzbob.kit.repository import Repository


class CreditRepository(Repository[CreditGrant]):
    model = CreditGrant

    def by_idempotency_key(
        self, session: Session, org_id: uuid.UUID, key: str
    ) -> CreditGrant | None:
        return session.scalars(
            select(CreditGrant).where(
                CreditGrant.org_id == org_id, CreditGrant.idempotency_key == key
            )
        ).one_or_none()

    def newest_of(
        self, session: Session, org_id: uuid.UUID, *, limit: int
    ) -> Sequence[CreditGrant]:
        return self.page(
            session,
            select(CreditGrant)
            .where(CreditGrant.org_id == org_id)
            .order_by(CreditGrant.created_at.desc(), CreditGrant.id.desc()),
            limit=limit,
        )

    def grants_until(
        self, session: Session, org_id: uuid.UUID, until: datetime
    ) -> list[tuple[datetime, int]]:
        """(granted at, cents) of every grant made up to `until`, oldest first."""
        rows = session.execute(
            select(CreditGrant.created_at, CreditGrant.amount_cents)
            .where(CreditGrant.org_id == org_id, CreditGrant.created_at <= until)
            .order_by(CreditGrant.created_at)
        ).all()
        return [(at, int(cents)) for at, cents in rows]

    def claim_pending_polar(self, session: Session, *, limit: int) -> Sequence[CreditGrant]:
        """Up to `limit` grants waiting for Polar, oldest first, locked; rows another worker
        holds are skipped (PostgreSQL)."""
        return session.scalars(
            select(CreditGrant)
            .where(CreditGrant.polar_state == PolarState.PENDING.value)
            .order_by(CreditGrant.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()

    def locked(self, session: Session, grant_id: uuid.UUID) -> CreditGrant | None:
        return session.scalars(
            select(CreditGrant)
            .where(CreditGrant.id == grant_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()


credit_repository = CreditRepository()
