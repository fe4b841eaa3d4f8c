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
    String,
    Table,
    Uuid,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import SQLCoreOperations

from orzbob.kit.bulk import append_rows, update_by_key
from orzbob.kit.db import dialect_name
from orzbob.kit.repository import Repository
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment

# Given the column holding an instance id, a correlated expression for that instance's
# `last_seen_at` (the instances domain registers it with the metering service).
LastSeenOf = Callable[[ColumnExpressionArgument[uuid.UUID]], ColumnElement[datetime]]


def _uuid_text(column: Any, dialect: str) -> ColumnElement[str]:
    """A UUID column as `str(uuid)` renders it (lower-case hex in 8-4-4-4-12 groups)."""
    if dialect == "postgresql":
        return cast(column, String)
    # SQLite keeps a UUID as its 32 hex digits.
    raw = type_coerce(column, String)
    parts = [func.substr(raw, start, length) for start, length in _UUID_GROUPS]
    out: ColumnElement[str] = parts[0]
    for part in parts[1:]:
        out = out.op("||")(literal_column("'-'")).op("||")(part)
    return out


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


def _iso_text(column: Any, dialect: str) -> ColumnElement[str]:
    """A UTC timestamp column as `datetime.isoformat()` renders it once tagged UTC
    (`2026-03-10T12:01:00+00:00`, with `.ffffff` only when there are microseconds)."""
    if dialect == "postgresql":
        # Constants inline (`literal_column`), not parameters: the plan stays the same.
        utc = func.timezone(literal_column("'UTC'"), column)
        whole = func.to_char(utc, literal_column("""'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'"""))
        fraction = func.to_char(utc, literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""))
        return case(
            (func.date_trunc(literal_column("'second'"), utc) == utc, whole), else_=fraction
        )
    # SQLite keeps `YYYY-MM-DD HH:MM:SS.ffffff`, already in UTC (see `UTCDateTime`).
    raw = type_coerce(column, String)
    seconds = func.replace(func.substr(raw, 1, 19), literal_column("' '"), literal_column("'T'"))
    whole_raw = func.replace(raw, literal_column("' '"), literal_column("'T'"))
    return case(
        (func.substr(raw, 20) == literal_column("'.000000'"), seconds.op("||")(_UTC_SUFFIX)),
        else_=whole_raw.op("||")(_UTC_SUFFIX),
    )


_UTC_SUFFIX: ColumnElement[str] = literal_column("'+00:00'")


def _event_columns(dialect: str) -> tuple[SQLCoreOperations[Any], ...]:
    """What the flusher reads of a record to ship it, ids and timestamps already rendered as
    the event's text, so it builds no UUID or datetime object per record."""
    return (
        _uuid_text(UsageRecord.id, dialect).label("id"),
        _uuid_text(UsageRecord.org_id, dialect).label("org_id"),
        _uuid_text(UsageRecord.instance_id, dialect).label("instance_id"),
        UsageRecord.tier,
        UsageRecord.minutes,
        UsageRecord.billable_minutes,
        UsageRecord.small_minutes,
        _iso_text(UsageRecord.interval_end, dialect).label("interval_end"),
        _iso_text(UsageRecord.period_start, dialect).label("period_start"),
    )


def _text_ids_in(ids: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Records whose id is one of `ids` (as `str(uuid)` renders them)."""
    if dialect == "postgresql":
        # One text parameter cast to uuid[] on the server: nothing to adapt per id here.
        literal_array = "{" + ",".join(ids) + "}"
        array = cast(bindparam("ids", literal_array, type_=String), postgresql.ARRAY(Uuid()))
        return UsageRecord.id == any_(array)
    return type_coerce(UsageRecord.id, String).in_([i.replace("-", "") for i in ids])


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
        after: tuple[uuid.UUID, uuid.UUID] | None,
        limit: int,
    ) -> Sequence[Row[uuid.UUID, uuid.UUID, uuid.UUID, str, datetime, int, datetime, datetime]]:
        """The next `limit` open segments by (org id, id), after the (org id, id) `after`, as
        plain rows (id, org id, instance id, tier, started at, emitted minutes, counted until,
        the instance's last sign of life), locked, skipping those another transaction holds.
        An org's segments are consecutive, so they fall in one batch (or two at a boundary)."""
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
            .order_by(UsageSegment.org_id, UsageSegment.id)
            .limit(limit)
            .with_for_update(of=UsageSegment, skip_locked=True, key_share=True)
        )
        if after is not None:
            stmt = stmt.where(tuple_(UsageSegment.org_id, UsageSegment.id) > tuple_(*after))
        # On the connection, as Core: columns need none of the ORM's row loading.
        return session.connection().execute(stmt).all()

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
        flushers never pick the same ones) to `worker_id` until `until`, returning what
        their events need: id, org_id, instance_id, tier, minutes, billable_minutes,
        small_minutes, interval_end and period_start, ids and timestamps as the event's
        text (`str(uuid)`, `datetime.isoformat()` in UTC)."""
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
            .returning(*_event_columns(dialect_name(session)))
        ).all()

    def extend_claims(
        self, session: Session, ids: Sequence[str], *, worker_id: str, until: datetime
    ) -> None:
        """Move the lease of these records, still pending and claimed by `worker_id`, to
        `until`."""
        session.execute(
            update(UsageRecord)
            .where(
                _text_ids_in(ids, dialect_name(session)),
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
        self, session: Session, ids: Sequence[str], *, worker_id: str, **values: Any
    ) -> int:
        """Unclaim these records (still pending and claimed by `worker_id`), count one more
        attempt and set `values`; returns how many."""
        result = session.execute(
            update(UsageRecord)
            .where(
                _text_ids_in(ids, dialect_name(session)),
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
