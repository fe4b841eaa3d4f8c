"""Queries on instances (the table `instances` owns).

Row locks are `FOR NO KEY UPDATE` (key_share) so that inserts referencing a locked instance
(usage records, events) do not wait on it; a locked read refreshes the loaded object
(`populate_existing`), since another transaction may have changed the row before the lock."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Row,
    bindparam,
    case,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.instances.models import Instance, State
from orzbob.kit.db import UTCDateTime, dialect_name, one_of
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
            one_of(session, Instance.id, ids)
        )
        if org_id is not None:
            stmt = stmt.where(Instance.org_id == org_id)
        return session.execute(stmt).all()

    def lock_unstopped_ids(
        self, session: Session, ids: Collection[uuid.UUID]
    ) -> Sequence[uuid.UUID]:
        """Lock the instances with these ids that are not stopped, in id order; their ids."""
        # Lock in key order first: two overlapping batches never wait on each other in a cycle.
        return session.scalars(
            select(Instance.id)
            .where(one_of(session, Instance.id, ids), Instance.state != State.STOPPED.value)
            .order_by(Instance.id)
            .with_for_update(key_share=True)
        ).all()

    def record_beats(
        self,
        session: Session,
        ids: list[uuid.UUID],
        active: list[bool],
        sources: list[str | None],
        *,
        now: datetime,
    ) -> None:
        """Write one beat per instance (`ids[k]` was active per `active[k]`, from
        `sources[k]`, None unless active) to those not stopped; lock them first
        (`lock_unstopped_ids`)."""
        if dialect_name(session) == "postgresql":
            # The whole batch in one statement, each row with its own beat; times only move
            # forward (every CASE reads the row as it was before this statement).
            session.execute(
                _PG_RECORD,
                {"now": now, "ids": ids, "active": active, "sources": sources},
            )
            return
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


instance_repository = InstanceRepository()
