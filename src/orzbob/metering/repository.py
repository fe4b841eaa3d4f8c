"""Queries on the tables metering owns: usage segments (run time being counted) and usage
records (the outbox the flusher ships to Polar)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Row,
    Table,
    Uuid,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from orzbob.kit.bulk import append_rows, update_by_key
from orzbob.kit.db import dialect_name
from orzbob.kit.repository import Repository
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment

# Given the column holding an instance id, a correlated expression for that instance's
# `last_seen_at` (the instances domain registers it with the metering service).
LastSeenOf = Callable[[ColumnExpressionArgument[uuid.UUID]], ColumnElement[datetime]]

# What the flusher reads of a record to ship it (the claim returns these columns).
EVENT_COLUMNS = (
    UsageRecord.id,
    UsageRecord.org_id,
    UsageRecord.instance_id,
    UsageRecord.tier,
    UsageRecord.minutes,
    UsageRecord.billable_minutes,
    UsageRecord.small_minutes,
    UsageRecord.interval_end,
    UsageRecord.period_start,
)


def _ids_in(ids: list[uuid.UUID], dialect: str) -> ColumnElement[bool]:
    # On PostgreSQL one array parameter (`= ANY`), not a thousand placeholders to parse.
    if dialect == "postgresql":
        return UsageRecord.id == any_(bindparam("ids", ids, type_=postgresql.ARRAY(Uuid())))
    return UsageRecord.id.in_(ids)


class UsageSegmentRepository(Repository[UsageSegment]):
    model = UsageSegment

    def any_open(self, session: Session) -> bool:
        """Whether any segment is open (one index probe)."""
        return (
            session.scalar(select(UsageSegment.id).where(UsageSegment.ended_at.is_(None)).limit(1))
            is not None
        )

    def open_of_instance(self, session: Session, instance_id: uuid.UUID) -> UsageSegment | None:
        """The instance's open segment, locked (`FOR NO KEY UPDATE`)."""
        return session.scalars(
            select(UsageSegment)
            .where(UsageSegment.instance_id == instance_id, UsageSegment.ended_at.is_(None))
            .with_for_update(key_share=True)
        ).one_or_none()

    def open_of_instances(
        self, session: Session, instance_ids: Sequence[uuid.UUID]
    ) -> Sequence[UsageSegment]:
        """The open segments of these instances, locked in id order."""
        return session.scalars(
            select(UsageSegment)
            .where(
                UsageSegment.instance_id.in_(sorted(instance_ids)),
                UsageSegment.ended_at.is_(None),
            )
            .order_by(UsageSegment.id)
            .with_for_update(key_share=True)
        ).all()

    def lock_open_batch(
        self,
        session: Session,
        last_seen_of: LastSeenOf,
        *,
        after: uuid.UUID | None,
        limit: int,
    ) -> Sequence[Row[uuid.UUID, uuid.UUID, uuid.UUID, str, datetime, int, datetime, datetime]]:
        """The next `limit` open segments by id (after `after`) as plain rows (id, org id,
        instance id, tier, started at, emitted minutes, counted until, the instance's last
        sign of life), locked, skipping those another transaction holds."""
        stmt = (
            select(
                UsageSegment.id,
                UsageSegment.org_id,
                UsageSegment.instance_id,
                UsageSegment.tier,
                UsageSegment.started_at,
                UsageSegment.emitted_minutes,
                UsageSegment.counted_until,
                last_seen_of(UsageSegment.instance_id),
            )
            .where(UsageSegment.ended_at.is_(None))
            .order_by(UsageSegment.id)
            .limit(limit)
            .with_for_update(of=UsageSegment, skip_locked=True, key_share=True)
        )
        if after is not None:
            stmt = stmt.where(UsageSegment.id > after)
        return session.execute(stmt).all()

    def lock_open_of_org(
        self, session: Session, org_id: uuid.UUID, last_seen_of: LastSeenOf
    ) -> Sequence[Row[UsageSegment, datetime]]:
        """Every open segment of one org, locked in id order (refreshed from the database),
        with its instance's last sign of life."""
        return session.execute(
            select(UsageSegment, last_seen_of(UsageSegment.instance_id))
            .where(UsageSegment.org_id == org_id, UsageSegment.ended_at.is_(None))
            .order_by(UsageSegment.id)
            .with_for_update(of=UsageSegment, key_share=True)
            .execution_options(populate_existing=True)
        ).all()

    def save_counters(
        self, session: Session, moved: Sequence[tuple[uuid.UUID, int, datetime]]
    ) -> None:
        """Set (emitted minutes, counted until) of each (segment id, …), in one statement."""
        update_by_key(
            session,
            UsageSegment.__table__,  # type: ignore[arg-type]
            ("id",),
            ("emitted_minutes", "counted_until"),
            moved,
        )


class UsageRecordRepository(Repository[UsageRecord]):
    model = UsageRecord

    def append(
        self, session: Session, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Append records (tuples in the order of `columns`) in one batch (`COPY` on
        PostgreSQL)."""
        append_rows(session, UsageRecord.__table__, columns, rows)  # type: ignore[arg-type]

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

    def pending_up_to(self, session: Session, limit: int) -> int:
        """How many records are pending, counting no further than `limit`."""
        waiting = session.scalar(
            select(func.count()).select_from(
                select(UsageRecord.id)
                .where(UsageRecord.state == RecordState.PENDING.value)
                .limit(limit)
                .subquery()
            )
        )
        return int(waiting or 0)

    def pending_stats(self, session: Session) -> tuple[int, datetime | None]:
        """(pending records, when the oldest pending one was written)."""
        count, oldest = session.execute(
            select(func.count(), func.min(UsageRecord.created_at)).where(
                UsageRecord.state == RecordState.PENDING.value
            )
        ).one()
        return int(count or 0), oldest

    def dead_count(self, session: Session) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.state == RecordState.DEAD.value)
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

    def records_of(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        period_start: datetime | None = None,
        after: datetime | None = None,
        upto: datetime | None = None,
    ) -> Sequence[UsageRecord]:
        """An org's records of one billing period, or whose interval ends in (after, upto],
        by interval end."""
        stmt = select(UsageRecord).where(UsageRecord.org_id == org_id)
        if period_start is not None:
            stmt = stmt.where(UsageRecord.period_start == period_start)
        if after is not None:
            stmt = stmt.where(UsageRecord.interval_end > after)
        if upto is not None:
            stmt = stmt.where(UsageRecord.interval_end <= upto)
        return session.scalars(stmt.order_by(UsageRecord.interval_end, UsageRecord.id)).all()

    def count_ending_in(
        self, session: Session, org_id: uuid.UUID, *, after: datetime, upto: datetime
    ) -> int:
        """How many of the org's records have an interval ending in (after, upto]."""
        return (
            session.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(
                    UsageRecord.org_id == org_id,
                    UsageRecord.interval_end > after,
                    UsageRecord.interval_end <= upto,
                )
            )
            or 0
        )

    def any_in_period(self, session: Session, org_id: uuid.UUID, *, period_start: datetime) -> bool:
        """Whether the org has any record in the billing period starting at `period_start`."""
        return (
            session.scalar(
                select(UsageRecord.id)
                .where(UsageRecord.org_id == org_id, UsageRecord.period_start == period_start)
                .limit(1)
            )
            is not None
        )

    def requeue(self, session: Session, states: Sequence[str], ids: Sequence[uuid.UUID]) -> int:
        """Put the records in one of `states` (only those of `ids`, unless it is empty) back
        in the queue, unclaimed; returns how many."""
        stmt = update(UsageRecord).where(UsageRecord.state.in_(states))
        if ids:
            stmt = stmt.where(UsageRecord.id.in_(list(ids)))
        result = session.execute(
            stmt.values(
                state=RecordState.PENDING.value, claimed_by=None, claim_expires_at=None
            ).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- the flusher's claims (it runs each in its own short transaction) -----------------
    def commit_without_flush_wait(self, session: Session) -> None:
        """On PostgreSQL, let this transaction's commit return without waiting for the WAL
        flush (`synchronous_commit` off for it alone); elsewhere nothing to do."""
        if dialect_name(session) == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))

    def claim(
        self,
        session: Session,
        *,
        worker_id: str,
        now: datetime,
        until: datetime,
        limit: int,
    ) -> Sequence[Row[*tuple[Any, ...]]]:
        """Lease the next `limit` records in one statement: an UPDATE of the oldest unleased
        pending records (picked `FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent
        flushers never pick the same ones) to `worker_id` until `until`, returning their
        `EVENT_COLUMNS`."""
        table: Table = UsageRecord.__table__  # type: ignore[assignment]
        picked = (
            select(UsageRecord.id)
            .where(
                UsageRecord.state == RecordState.PENDING.value,
                or_(UsageRecord.claim_expires_at.is_(None), UsageRecord.claim_expires_at < now),
            )
            .order_by(UsageRecord.id)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        )
        return session.execute(
            update(table)
            .where(table.c.id.in_(picked.scalar_subquery()))
            .values(claimed_by=worker_id, claim_expires_at=until)
            .returning(*EVENT_COLUMNS)
        ).all()

    def extend_claims(
        self, session: Session, ids: list[uuid.UUID], *, worker_id: str, until: datetime
    ) -> None:
        """Move the lease of these records, still pending and claimed by `worker_id`, to
        `until`."""
        session.execute(
            update(UsageRecord)
            .where(
                _ids_in(ids, dialect_name(session)),
                UsageRecord.claimed_by == worker_id,
                UsageRecord.state == RecordState.PENDING.value,
            )
            .values(claim_expires_at=until)
            .execution_options(synchronize_session=False)
        )

    def release_claims_of(self, session: Session, worker_id: str) -> int:
        """Release every pending record claimed by `worker_id`; returns how many."""
        result = session.execute(
            update(UsageRecord)
            .where(
                UsageRecord.claimed_by == worker_id,
                UsageRecord.state == RecordState.PENDING.value,
            )
            .values(claimed_by=None, claim_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def mark_claimed(
        self, session: Session, ids: list[uuid.UUID], *, worker_id: str, **values: Any
    ) -> int:
        """Unclaim these records (still pending and claimed by `worker_id`), count one more
        attempt and set `values`; returns how many."""
        result = session.execute(
            update(UsageRecord)
            .where(
                _ids_in(ids, dialect_name(session)),
                UsageRecord.claimed_by == worker_id,
                UsageRecord.state == RecordState.PENDING.value,
            )
            .values(
                claimed_by=None,
                claim_expires_at=None,
                attempts=UsageRecord.attempts + 1,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


usage_segments = UsageSegmentRepository()
usage_records = UsageRecordRepository()
