"""Queries on usage records: the flusher's queue, seen from operations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orzbob.kit.repository import Repository
from orzbob.metering.models import RecordState, UsageRecord


class UsageRecordRepository(Repository[UsageRecord]):
    model = UsageRecord

    def count_by_state(self, session: Session) -> dict[str, int]:
        rows = session.execute(
            select(UsageRecord.state, func.count()).group_by(UsageRecord.state)
        ).all()
        return {state: int(n) for state, n in rows}

    def pending_count(self, session: Session) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.state == RecordState.PENDING.value)
            )
            or 0
        )

    def dead(self, session: Session, *, limit: int) -> Sequence[UsageRecord]:
        stmt = select(UsageRecord).where(UsageRecord.state == RecordState.DEAD.value)
        return self.page(session, stmt, limit=limit)

    def requeue_dead(self, session: Session, ids: Sequence[uuid.UUID]) -> int:
        """Dead records (those of `ids`, or all) back to pending, unclaimed."""
        stmt = update(UsageRecord).where(UsageRecord.state == RecordState.DEAD.value)
        if ids:
            stmt = stmt.where(UsageRecord.id.in_(ids))
        result = session.execute(
            stmt.values(
                state=RecordState.PENDING.value, claimed_by=None, claim_expires_at=None
            ).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


usage_records = UsageRecordRepository()
