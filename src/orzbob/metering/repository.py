"""Queries on usage records: the flusher's queue, seen from operations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import exists, func, select
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

    def orgs_with_usage(self, session: Session, org_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Those of these orgs (a page, at most a few hundred) that have any usage record:
        one index probe each, in one statement."""
        ids = list(dict.fromkeys(org_ids))
        if not ids:
            return set()
        row = session.execute(select(*(exists().where(UsageRecord.org_id == i) for i in ids)))
        return {i for i, has in zip(ids, row.one(), strict=True) if has}


usage_records = UsageRecordRepository()
