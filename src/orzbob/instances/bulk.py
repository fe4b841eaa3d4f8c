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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from orzbob.catalog.models import Catalog
from orzbob.instances.models import State
from orzbob.instances.repository import instance_repository
from orzbob.instances.service import instance_service

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
            rows = instance_repository.beaten(session, merged, org_id=org_id)
        found = {r[0] for r in rows}
        result.unknown_ids = [i for i in merged if i not in found]
        live: list[uuid.UUID] = []
        running_orgs: set[uuid.UUID] = set()
        stopped, running, late = State.STOPPED.value, State.RUNNING.value, now - timeout
        for id_, org_id, state, last_seen_at in rows:
            if state == stopped:
                result.stopped_ids.append(id_)
            elif state == running and last_seen_at < late:
                if self._late(sessions, merged[id_], org_id, catalog, now, timeout):
                    result.stopped_ids.append(id_)
                else:
                    result.accepted += 1
            else:
                live.append(id_)
                if state == running:
                    running_orgs.add(org_id)
        for check in bulk_cap_checks:
            result.paused.update(check(sessions, list(running_orgs), now, catalog))
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
        return instance_repository.record_beats(
            session,
            [b.instance_id for b in beats],
            [b.active for b in beats],
            [b.source if b.active else None for b in beats],
            now=now,
        )


bulk_beats = BulkBeats()
