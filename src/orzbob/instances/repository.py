"""Queries on instances (the table `instances` owns).

Row locks are `FOR NO KEY UPDATE` (key_share) so that inserts referencing a locked instance
(usage records, events) do not wait on it; a locked read refreshes the loaded object
(`populate_existing`), since another transaction may have changed the row before the lock."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    ColumnExpressionArgument,
    Row,
    String,
    Update,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.instances.models import Instance, State
from orzbob.kit.db import StatementConnection, UTCDateTime, dialect_name, one_of
from orzbob.kit.repository import Repository

# Built once: a heartbeat is the hottest write. The one query of this repository that reads
# another domain's table: the org beside the locked instance, in the same round trip (the cap
# checks read it). Split between two repositories it would cost every heartbeat one more
# statement; tests/test_repositories.py pins this reach.
_BEAT_LOCK = (
    select(Instance, Org)
    .join(Org, Org.id == Instance.org_id)
    .where(Instance.id == bindparam("instance_id"), Instance.org_id == bindparam("org_id"))
    .with_for_update(of=Instance, key_share=True)
    .execution_options(populate_existing=True)
)

# The rows a batch of beats writes, locked in id order (two overlapping batches never wait on
# each other in a cycle) and counted, not sent back: a thousand ids cost more to read than
# to lock. The write comes after it as its own statement, with a snapshot taken once the
# locks are held (one statement for both would re-check every row a concurrent batch had
# just written).
_PG_LOCK = text(
    """
    SELECT count(*) FROM (
      SELECT id FROM instances
      WHERE id IN (SELECT unnest(CAST(:ids AS uuid[]))) AND state <> 'stopped'
      ORDER BY id
      FOR NO KEY UPDATE
    ) AS locked
    """
)
_PG_RECORD = text(
    """
    UPDATE instances AS i SET
      last_seen_at = CASE WHEN i.last_seen_at < :now THEN :now ELSE i.last_seen_at END,
      last_active_at = CASE WHEN b.active AND i.last_active_at <= :now THEN :now
                            ELSE i.last_active_at END,
      last_active_source = CASE WHEN b.active AND i.last_active_at <= :now THEN b.source
                                ELSE i.last_active_source END
    FROM unnest(CAST(:ids AS uuid[]), CAST(:active AS boolean[]), CAST(:sources AS varchar[]))
      AS b(id, active, source)
    WHERE i.id = b.id AND i.state <> 'stopped'
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


@functools.lru_cache(maxsize=8)
def _quick_beat(
    token_org: ColumnElement[uuid.UUID | None], quiet: tuple[ColumnElement[bool], ...]
) -> Update:
    """`quick_beat`'s statement, built once per set of conditions (see `_quick_beat_sql`)."""
    now = bindparam("now", type_=UTCDateTime())
    fresh = and_(bindparam("active", type_=Boolean()), Instance.last_active_at <= now)
    return (
        update(Instance)
        .where(
            Instance.id == bindparam("instance_id"),
            Instance.org_id == token_org,
            Org.id == Instance.org_id,
            Org.deleted_at.is_(None),
            Instance.state != State.STOPPED.value,
            or_(
                Instance.state != State.RUNNING.value,
                and_(
                    Instance.last_seen_at >= bindparam("seen_after", type_=UTCDateTime()),
                    *quiet,
                ),
            ),
        )
        .values(
            last_seen_at=case((Instance.last_seen_at < now, now), else_=Instance.last_seen_at),
            last_active_at=case((fresh, now), else_=Instance.last_active_at),
            last_active_source=case(
                (fresh, bindparam("source", type_=String())), else_=Instance.last_active_source
            ),
        )
        .returning(*Instance.__table__.columns)
    )


@functools.lru_cache(maxsize=8)
def _quick_beat_sql(
    dialect: Dialect,
    token_org: ColumnElement[uuid.UUID | None],
    quiet: tuple[ColumnElement[bool], ...],
) -> tuple[str, dict[str, Any]]:
    """`_quick_beat` as the driver's SQL, compiled once, with the values of its literals:
    SQLAlchemy derives a cache key from the whole statement on every execution, which cost
    more than the rest of a beat."""
    compiled = _quick_beat(token_org, quiet).compile(dialect=dialect)
    return compiled.string, dict(compiled.params)


def _pg_array(values: Iterable[uuid.UUID | bool | str | None]) -> str:
    """A PostgreSQL array literal of these ids, flags or strings, for a parameter the SQL
    casts once (`unnest(CAST(:ids AS uuid[]))`). psycopg's own list dumper tests every
    element against a regular expression: a third of a 1,000-beat batch's CPU went there."""
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif isinstance(v, bool):
            out.append("t" if v else "f")
        elif isinstance(v, uuid.UUID):
            out.append(str(v))
        else:
            out.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


def _ids_in(session: Session, ids: Collection[uuid.UUID]) -> ColumnElement[bool]:
    """`instances.id` among `ids` (`kit.db.one_of`), the ids sent as one array literal and
    unnested once in a subquery: a cast in the WHERE clause itself would be evaluated for
    every row under the generic plan psycopg's prepared statements get."""
    if dialect_name(session) != "postgresql":
        return one_of(session, Instance.id, ids)
    literal = bindparam(None, _pg_array(ids), type_=String())
    return Instance.id.in_(
        select(func.unnest(cast(literal, postgresql.ARRAY(Instance.id.type)))).scalar_subquery()
    )


class InstanceRepository(Repository[Instance]):
    model = Instance

    def lock_for_beat(
        self, session: Session, org_id: uuid.UUID, instance_id: uuid.UUID
    ) -> tuple[Instance, Org] | None:
        """The org's instance, locked, with its org read beside it (not locked)."""
        row = session.execute(
            _BEAT_LOCK, {"instance_id": instance_id, "org_id": org_id}
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    def quick_beat(
        self,
        conn: StatementConnection,
        token_org: ColumnElement[uuid.UUID | None],
        quiet: tuple[ColumnElement[bool], ...],
        params: dict[str, object],
    ) -> dict[str, Any] | None:
        """One heartbeat in one statement (`instance_service.quick_heartbeat`): the
        instance `instance_id` of the org `token_org` gives (a live one), not stopped, and
        when running seen since `seen_after` and meeting every `quiet` condition, gets the
        beat at `now` (times only move forward; `active` from `source`); its row as written,
        or None (nothing written). PostgreSQL only: the caller checks the database. The row
        lock is the UPDATE's own; on a `kit.db.statement_connection` it commits as it runs."""
        # psycopg binds the values as they are (aware datetimes, UUIDs) and the SQL casts them;
        # timestamps come back in the session's time zone (UTC, so already tagged with
        # `datetime.UTC`) and are given in UTC, as the columns' type gives them.
        sql, literals = _quick_beat_sql(conn.dialect, token_org, quiet)
        row = conn.first_row(sql, {**literals, **params})
        if row is None:
            return None
        for k, v in row.items():
            if isinstance(v, datetime) and v.tzinfo is not UTC:
                row[k] = v.astimezone(UTC)
        return row

    def of_org(
        self, session: Session, org_id: uuid.UUID, instance_id: uuid.UUID, *, lock: bool = False
    ) -> Instance | None:
        """The org's instance with this id (another org's is None), optionally locked."""
        stmt = select(Instance).where(Instance.id == instance_id, Instance.org_id == org_id)
        if lock:
            stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
        return session.scalars(stmt).one_or_none()

    def list_of_org(
        self, session: Session, org_id: uuid.UUID, *, state: State | None, limit: int
    ) -> Sequence[Instance]:
        """The org's instances, newest first."""
        stmt = select(Instance).where(Instance.org_id == org_id)
        if state is not None:
            stmt = stmt.where(Instance.state == state.value)
        return session.scalars(stmt.order_by(Instance.id.desc()).limit(limit)).all()

    def count_running(self, session: Session, org_id: uuid.UUID) -> int:
        """The org's instances that count against its running limit (pending or running)."""
        return int(
            session.scalar(
                select(func.count())
                .select_from(Instance)
                .where(
                    Instance.org_id == org_id,
                    Instance.state.in_((State.PENDING.value, State.RUNNING.value)),
                )
            )
            or 0
        )

    def has_running(self, session: Session) -> bool:
        """Whether any org has a running instance."""
        return (
            session.scalar(
                select(Instance.id).where(Instance.state == State.RUNNING.value).limit(1)
            )
            is not None
        )

    def silent_ids(
        self, session: Session, *, seen_before: datetime, limit: int
    ) -> Sequence[uuid.UUID]:
        """Running instances last seen before `seen_before`, by id, unlocked."""
        return session.scalars(
            select(Instance.id)
            .where(Instance.state == State.RUNNING.value, Instance.last_seen_at < seen_before)
            .order_by(Instance.id)
            .limit(limit)
        ).all()

    def oldest_running_seen(self, session: Session) -> datetime | None:
        """The stalest `last_seen_at` of the running instances, if any runs."""
        return session.scalar(
            select(func.min(Instance.last_seen_at)).where(Instance.state == State.RUNNING.value)
        )

    def org_id_of(self, session: Session, instance_id: uuid.UUID) -> uuid.UUID | None:
        return session.scalar(select(Instance.org_id).where(Instance.id == instance_id))

    def lock_if_free(self, session: Session, instance_id: uuid.UUID) -> Instance | None:
        """The instance, locked, or None when it does not exist or another transaction holds
        it (`SKIP LOCKED`)."""
        return session.scalars(
            select(Instance)
            .where(Instance.id == instance_id)
            .with_for_update(skip_locked=True, key_share=True)
            .execution_options(populate_existing=True)
        ).one_or_none()

    def lock_unstopped(self, session: Session, org_id: uuid.UUID) -> Sequence[Instance]:
        """Lock every instance of the org that is not stopped, in id order."""
        return session.scalars(
            select(Instance)
            .where(Instance.org_id == org_id, Instance.state != State.STOPPED.value)
            .order_by(Instance.id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        ).all()

    def lock_running(self, session: Session, org_id: uuid.UUID) -> Sequence[Instance]:
        """Lock the org's running instances in id order, skipping any another transaction
        holds (`SKIP LOCKED`)."""
        return session.scalars(
            select(Instance)
            .where(Instance.org_id == org_id, Instance.state == State.RUNNING.value)
            .order_by(Instance.id)
            .with_for_update(skip_locked=True, key_share=True)
            .execution_options(populate_existing=True)
        ).all()

    # -- liveness (metering's `last_seen_hooks`) ------------------------------------------
    @staticmethod
    def last_seen_of(instance_id: ColumnExpressionArgument[uuid.UUID]) -> ColumnElement[datetime]:
        """The last sign of life of the instance whose id `instance_id` holds, as a correlated
        subquery (the checkpoint never counts past it)."""
        return (
            select(Instance.last_seen_at)
            .where(Instance.id == instance_id)
            .scalar_subquery()
            .label("last_seen_at")
        )

    # -- heartbeats in bulk (instances.bulk) ----------------------------------------------
    def beaten(
        self, session: Session, ids: Collection[uuid.UUID], *, org_id: uuid.UUID | None
    ) -> Sequence[Row[uuid.UUID, uuid.UUID, str, datetime]]:
        """(id, org id, state, last seen) of the instances with these ids, unlocked; only the
        org's unless `org_id` is None (the fleet)."""
        stmt = select(Instance.id, Instance.org_id, Instance.state, Instance.last_seen_at).where(
            _ids_in(session, ids)
        )
        if org_id is not None:
            stmt = stmt.where(Instance.org_id == org_id)
        return session.execute(stmt).all()

    def record_beats(
        self,
        session: Session,
        ids: list[uuid.UUID],
        active: list[bool],
        sources: list[str | None],
        *,
        now: datetime,
    ) -> int:
        """Lock the instances with these ids that are not stopped, in id order, then write one
        beat to each (`ids[k]` was active per `active[k]`, from `sources[k]`, None unless
        active); how many were written."""
        if dialect_name(session) == "postgresql":
            literal = _pg_array(ids)
            locked = int(session.execute(_PG_LOCK, {"ids": literal}).scalar_one())
            # The whole batch in one statement, each row with its own beat; times only move
            # forward (every CASE reads the row as it was before this statement).
            session.execute(
                _PG_RECORD,
                {
                    "now": now,
                    "ids": literal,
                    "active": _pg_array(active),
                    "sources": _pg_array(sources),
                },
            )
            return locked
        # Lock in key order first: two overlapping batches never wait on each other in a cycle.
        locked_ids = session.scalars(
            select(Instance.id)
            .where(_ids_in(session, ids), Instance.state != State.STOPPED.value)
            .order_by(Instance.id)
            .with_for_update(key_share=True)
        ).all()
        # One statement per kind of beat (passive, or active from one source): each row is
        # written once. Times only move forward.
        groups: dict[tuple[bool, str | None], list[uuid.UUID]] = defaultdict(list)
        for id_, is_active, source in zip(ids, active, sources, strict=True):
            groups[(is_active, source)].append(id_)
        alive = Instance.state != State.STOPPED.value
        seen = case((Instance.last_seen_at < now, now), else_=Instance.last_seen_at)
        for (is_active, source), group in groups.items():
            values: dict[str, object] = {"last_seen_at": seen}
            if is_active:
                values["last_active_at"] = case(
                    (Instance.last_active_at <= now, now), else_=Instance.last_active_at
                )
                values["last_active_source"] = case(
                    (Instance.last_active_at <= now, source), else_=Instance.last_active_source
                )
            session.execute(
                update(Instance)
                .where(Instance.id.in_(group), alive)
                .values(values)
                .execution_options(synchronize_session=False)
            )
        return len(locked_ids)


instance_repository = InstanceRepository()
