"""Heartbeats in bulk (`POST /v1/heartbeats`): a control plane that gathers its agents' beats
sends up to 1,000 at a time. The whole batch costs a handful of statements, not one
transaction per beat, and a beat that crosses a cap pauses its instance as a single beat does.

The steps, each its own short transaction:
1. read the beaten instances (scoped to the caller's org unless it is the fleet);
2. a beat that comes after a heartbeat timeout that should have fired takes the single-beat
   path, which stops the instance at its last beat (rare);
3. caps are checked for the orgs whose instances run, before the beats' activity counts
   (the `bulk_cap_checks` hook; one org per transaction, as the sweep does);
4. last-seen and last-active times are written, rows locked in id order first.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, select, text, update
from sqlalchemy.orm import Session

from orzbob.catalog.models import Catalog
from orzbob.instances.models import Instance, State
from orzbob.instances.service import instance_service
from orzbob.kit.db import UTCDateTime, dialect_name, one_of

Sessions = Callable[[], AbstractContextManager[Session]]
# Caps for the orgs of beaten running instances: {instance id: cap} of those it paused.
BulkCapCheck = Callable[[Sessions, Sequence[uuid.UUID], datetime, Catalog], dict[uuid.UUID, str]]
bulk_cap_checks: list[BulkCapCheck] = []


@dataclass(frozen=True)
class BeatIn:
    instance_id: uuid.UUID
    active: bool
    source: str | None


@dataclass
class BulkResult:
    accepted: int = 0
    duplicates: int = 0
    unknown_ids: list[uuid.UUID] = field(default_factory=list)
    stopped_ids: list[uuid.UUID] = field(default_factory=list)
    paused: dict[uuid.UUID, str] = field(default_factory=dict)


def merge(beats: Sequence[BeatIn]) -> tuple[dict[uuid.UUID, BeatIn], int]:
    """One beat per instance: active if any was, with the last active beat's source."""
    merged: dict[uuid.UUID, BeatIn] = {}
    for b in beats:
        if b.instance_id not in merged or b.active:
            merged[b.instance_id] = b
    return merged, len(beats) - len(merged)


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


class BulkBeats:
    def apply(
        self,
        sessions: Sessions,
        beats: Sequence[BeatIn],
        *,
        org_id: uuid.UUID | None,
        catalog: Catalog,
        now: datetime,
        timeout: timedelta,
    ) -> BulkResult:
        merged, duplicates = merge(beats)
        result = BulkResult(duplicates=duplicates)
        with sessions() as session:
            stmt = select(
                Instance.id, Instance.org_id, Instance.state, Instance.last_seen_at
            ).where(one_of(session, Instance.id, merged))
            if org_id is not None:
                stmt = stmt.where(Instance.org_id == org_id)
            rows = session.execute(stmt).all()
        found = {r.id: r for r in rows}
        result.unknown_ids = [i for i in merged if i not in found]
        live: list[uuid.UUID] = []
        running_orgs: set[uuid.UUID] = set()
        for r in rows:
            if r.state == State.STOPPED.value:
                result.stopped_ids.append(r.id)
            elif r.state == State.RUNNING.value and r.last_seen_at < now - timeout:
                if self._late(sessions, merged[r.id], r.org_id, catalog, now, timeout):
                    result.stopped_ids.append(r.id)
                else:
                    result.accepted += 1
            else:
                live.append(r.id)
                if r.state == State.RUNNING.value:
                    running_orgs.add(r.org_id)
        for check in bulk_cap_checks:
            result.paused.update(check(sessions, sorted(running_orgs), now, catalog))
        if live:
            with sessions() as session:
                result.accepted += self._record(session, [merged[i] for i in live], now)
        return result

    def _late(
        self,
        sessions: Sessions,
        beat: BeatIn,
        org_id: uuid.UUID,
        catalog: Catalog,
        now: datetime,
        timeout: timedelta,
    ) -> bool:
        """The single-beat path for a beat after a missed timeout; True if it stopped."""
        with sessions() as session:
            done = instance_service.heartbeat(
                session,
                org_id,
                beat.instance_id,
                active=beat.active,
                source=beat.source,
                catalog=catalog,
                now=now,
                timeout=timeout,
            )
            return done.instance.state == State.STOPPED.value

    def _record(self, session: Session, beats: Sequence[BeatIn], now: datetime) -> int:
        alive = Instance.state != State.STOPPED.value
        # Lock in key order first: two overlapping batches never wait on each other in a cycle.
        locked = session.scalars(
            select(Instance.id)
            .where(one_of(session, Instance.id, [b.instance_id for b in beats]), alive)
            .order_by(Instance.id)
            .with_for_update(key_share=True)
        ).all()
        if dialect_name(session) == "postgresql":
            # The whole batch in one statement, each row with its own beat; times only move
            # forward (every CASE reads the row as it was before this statement).
            session.execute(
                _PG_RECORD,
                {
                    "now": now,
                    "ids": [b.instance_id for b in beats],
                    "active": [b.active for b in beats],
                    "sources": [b.source if b.active else None for b in beats],
                },
            )
            return len(locked)
        # One statement per kind of beat (passive, or active from one source): each row is
        # written once. Times only move forward.
        groups: dict[tuple[bool, str | None], list[uuid.UUID]] = defaultdict(list)
        for b in beats:
            groups[(b.active, b.source if b.active else None)].append(b.instance_id)
        seen = case((Instance.last_seen_at < now, now), else_=Instance.last_seen_at)
        for (active, source), group in groups.items():
            values: dict[str, object] = {"last_seen_at": seen}
            if active:
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
        return len(locked)


bulk_beats = BulkBeats()
