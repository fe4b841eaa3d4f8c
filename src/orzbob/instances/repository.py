"""Queries on instances (the table `instances` owns).

Row locks are `FOR NO KEY UPDATE` (key_share) so that inserts referencing a locked instance
(usage records, events) do not wait on it; a locked read refreshes the loaded object
(`populate_existing`), since another transaction may have changed the row before the lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orzbob.instances.models import Instance, State
from orzbob.kit.repository import Repository


class InstanceRepository(Repository[Instance]):
    model = Instance

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


instance_repository = InstanceRepository()
