"""What the service does to instances on its own: stopping silent ones (heartbeat timeout)
and every instance of an org being deleted. Lock order as in `instances.service`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.instances.models import Reason, State
from orzbob.instances.repository import instance_repository
from orzbob.instances.service import instance_service


class SweepService:
    def silent_candidates(
        self, session: Session, *, now: datetime, timeout: timedelta, limit: int = 500
    ) -> Sequence[uuid.UUID]:
        """Running instances silent for longer than `timeout`, unlocked (each is re-checked
        under its lock by `stop_if_silent`)."""
        return instance_repository.silent_ids(session, seen_before=now - timeout, limit=limit)

    def stop_if_silent(
        self,
        session: Session,
        instance_id: uuid.UUID,
        *,
        now: datetime,
        timeout: timedelta,
        catalog: Catalog,
    ) -> bool:
        """Stop one instance (reason `heartbeat_timeout`) if it is still running and silent;
        usage ends at its last heartbeat, so dead time is never billed. An instance another
        transaction holds is skipped: it is being changed right now, and the next sweep sees
        what that change left."""
        # The org's plan change that fell due is applied first (org lock before instance).
        org_id = instance_repository.org_id_of(session, instance_id)
        if org_id is None:
            return False
        instance_service.apply_due_changes(session, org_id, catalog=catalog, now=now)
        instance = instance_repository.lock_if_free(session, instance_id)
        if instance is None or not instance_service.timed_out(instance, now, timeout):
            return False
        instance_service.stop_timed_out(session, instance, catalog=catalog, now=now)
        return True

    def stop_org_instances(
        self, session: Session, org: Org, now: datetime, catalog: Catalog
    ) -> int:
        """Stop every instance of an org being deleted (reason `admin`), closing its usage in
        the caller's transaction and one allocation. The caller holds the org row lock; every
        instance, then every open segment, is locked before any quota period."""
        # The org's plan change that fell due is a boundary for this last usage too.
        instance_service.apply_due_changes(session, org.id, catalog=catalog, now=now)
        instances = instance_repository.lock_unstopped(session, org.id)
        instance_service.halt_many(
            session,
            org,
            [(i, Reason.ADMIN, now) for i in instances],
            to=State.STOPPED,
            catalog=catalog,
            now=now,
        )
        return len(instances)

    def oldest_running_seen(self, session: Session) -> datetime | None:
        """The stalest last heartbeat of the running instances: nobody times out before it
        does."""
        return instance_repository.oldest_running_seen(session)


sweep_service = SweepService()
