"""Periodic metering work: checkpoint open segments so running usage is seen in near real
time."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from orzbob.accounts.models import Org
from orzbob.instances.models import Instance
from orzbob.metering.models import UsageSegment
from orzbob.metering.service import metering_service
from orzbob.runtime import Runtime

CHECKPOINT_BATCH = 1000


def checkpoint_open_segments(runtime: Runtime) -> int:
    """One pass over every open segment, a batch per transaction. Segments another process
    holds are skipped; they are checkpointed by that process or on the next pass."""
    now = runtime.clock.now()
    last: uuid.UUID | None = None
    written = 0
    while True:
        with runtime.session() as session:
            stmt = (
                select(UsageSegment, Instance)
                .join(Instance, Instance.id == UsageSegment.instance_id)
                .where(UsageSegment.ended_at.is_(None))
                .order_by(UsageSegment.id)
                .limit(CHECKPOINT_BATCH)
                .with_for_update(of=UsageSegment, skip_locked=True, key_share=True)
            )
            if last is not None:
                stmt = stmt.where(UsageSegment.id > last)
            pairs = [(seg, inst) for seg, inst in session.execute(stmt).all()]
            if not pairs:
                return written
            org_ids = {seg.org_id for seg, _ in pairs}
            orgs = {o.id: o for o in session.scalars(select(Org).where(Org.id.in_(org_ids)))}
            written += metering_service.checkpoint_segments(
                session, pairs, orgs, catalog=runtime.catalog, now=now
            )
            last = pairs[-1][0].id
        if len(pairs) < CHECKPOINT_BATCH:
            return written
