"""Segments and usage records: run time turned into whole minutes, exactly once
(docs/spec.md §3)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.instances.models import Instance
from orzbob.kit.errors import Conflict
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment
from orzbob.metering.repository import usage_records
from orzbob.quota.allocation import UsageDraft, allocate, allocate_many
from orzbob.quota.periods import boundaries_between

_MICROSECOND = timedelta(microseconds=1)

# Caps cut usage (docs/spec.md §6): the throttle domain registers limiters that say, for the open
# segments of the given orgs, the latest instant each may be counted to. `closing` maps a
# segment being closed to the moment it closes (a user's pause counts up to then, not up to
# the last heartbeat). Segments a limiter does not name are not limited by it.
Limiter = Callable[
    [Session, Sequence[Org], Catalog, datetime, Mapping[uuid.UUID, datetime]],
    dict[uuid.UUID, datetime],
]
limiters: list[Limiter] = []

# Moments past which an org's usage must not be recorded yet, by org id: a plan change that
# fell due and is not applied yet is a boundary, like a period end (the polar domain
# registers its scheduled changes here through `install_hooks`).
UsageCut = Callable[[Session, Collection[uuid.UUID], datetime], dict[uuid.UUID, datetime]]
usage_cuts: list[UsageCut] = []


def rounded_minutes(start: datetime, end: datetime) -> int:
    """Minutes from `start` to `end`, rounded up: 61 s is 2 minutes, 60 s is 1."""
    micros = (end - start) // _MICROSECOND
    return -(-micros // 60_000_000) if micros > 0 else 0


class MeteringService:
    def limits(
        self,
        session: Session,
        orgs: Sequence[Org],
        *,
        catalog: Catalog,
        now: datetime,
        closing: Mapping[uuid.UUID, datetime] | None = None,
    ) -> dict[uuid.UUID, datetime]:
        """The earliest limit every registered limiter puts on each open segment."""
        out: dict[uuid.UUID, datetime] = {}
        for limiter in limiters:
            for seg_id, at in limiter(session, orgs, catalog, now, closing or {}).items():
                out[seg_id] = min(at, out.get(seg_id, at))
        return out

    def open_segment(self, session: Session, instance: Instance, *, at: datetime) -> UsageSegment:
        segment = UsageSegment(
            org_id=instance.org_id,
            instance_id=instance.id,
            tier=instance.tier,
            started_at=at,
            ended_at=None,
            emitted_minutes=0,
            counted_until=at,
        )
        session.add(segment)
        session.flush()
        return segment

    def open_segment_of(self, session: Session, instance_id: uuid.UUID) -> UsageSegment | None:
        return session.scalars(
            select(UsageSegment)
            .where(UsageSegment.instance_id == instance_id, UsageSegment.ended_at.is_(None))
            .with_for_update(key_share=True)
        ).one_or_none()

    def open_segments_of(
        self, session: Session, instance_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, UsageSegment]:
        """The open segments of these instances, locked in id order."""
        return {
            s.instance_id: s
            for s in session.scalars(
                select(UsageSegment)
                .where(
                    UsageSegment.instance_id.in_(sorted(instance_ids)),
                    UsageSegment.ended_at.is_(None),
                )
                .order_by(UsageSegment.id)
                .with_for_update(key_share=True)
            )
        }

    def close_segments(
        self,
        session: Session,
        org: Org,
        closes: Sequence[tuple[Instance, datetime]],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Close each instance's open segment at its moment (never past a cap), recording
        the minutes not yet emitted, in one allocation."""
        if not closes:
            return []
        segments = self.open_segments_of(session, [i.id for i, _ in closes])
        for instance, _ in closes:
            if instance.id not in segments:
                raise Conflict(f"Instance {instance.id} has no open usage segment.")
        at_of = {segments[i.id].id: at for i, at in closes}
        limit = self.limits(session, [org], catalog=catalog, now=now, closing=at_of)
        drafts: list[UsageDraft] = []
        for instance, at in closes:
            segment = segments[instance.id]
            end = max(min(at, limit.get(segment.id, at)), segment.counted_until)
            drafts.extend(self._drafts(segment, org, end))
            segment.ended_at = end
        rows = allocate(session, org, drafts, catalog=catalog, now=now)
        session.flush()
        return rows

    def checkpoint_segments(
        self,
        session: Session,
        pairs: Sequence[tuple[UsageSegment, Instance]],
        orgs: dict[uuid.UUID, Org],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> int:
        """Emit the minutes open segments have accrued up to their instance's last sign of
        life (never past it). Returns the number of usage records written."""
        by_org: dict[uuid.UUID, list[UsageDraft]] = defaultdict(list)
        limits = self.limits(
            session,
            [orgs[o] for o in sorted({seg.org_id for seg, _ in pairs})],
            catalog=catalog,
            now=now,
        )
        cuts = self._cuts(session, orgs.keys(), now)
        for segment, instance in pairs:
            upto = min(
                now,
                instance.last_seen_at,
                limits.get(segment.id, now),
                cuts.get(segment.org_id, now),
            )
            if upto <= segment.counted_until:
                continue
            by_org[segment.org_id].extend(self._drafts(segment, orgs[segment.org_id], upto))
        return len(allocate_many(session, orgs, by_org, catalog=catalog, now=now))

    @staticmethod
    def _cuts(
        session: Session, org_ids: Collection[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, datetime]:
        cuts: dict[uuid.UUID, datetime] = {}
        for hook in usage_cuts:
            for org_id, at in hook(session, org_ids, now).items():
                cuts[org_id] = min(at, cuts.get(org_id, at))
        return cuts

    def record_until(self, session: Session, org: Org, at: datetime, catalog: Catalog) -> int:
        """Record the org's running usage up to `at` (never past a last heartbeat) under its
        current plan: called just before its plan changes, so the change is a boundary.
        The caller holds the org row; segments are locked before any period."""
        drafts: list[UsageDraft] = []
        pairs = self.lock_open_segments(session, org.id)
        limits = self.limits(session, [org], catalog=catalog, now=at) if pairs else {}
        for segment, instance in pairs:
            upto = min(at, instance.last_seen_at, limits.get(segment.id, at))
            if upto > segment.counted_until:
                drafts.extend(self._drafts(segment, org, upto))
        return len(allocate(session, org, drafts, catalog=catalog, now=at))

    def lock_open_segments(
        self, session: Session, org_id: uuid.UUID
    ) -> Sequence[tuple[UsageSegment, Instance]]:
        """Lock every open segment of one org, in id order, with its instance (unlocked): a
        transaction that closes several of them takes all segment locks before any period
        lock (docs/architecture.md)."""
        rows = session.execute(
            select(UsageSegment, Instance)
            .join(Instance, Instance.id == UsageSegment.instance_id)
            .where(UsageSegment.org_id == org_id, UsageSegment.ended_at.is_(None))
            .order_by(UsageSegment.id)
            .with_for_update(of=UsageSegment, key_share=True)
            .execution_options(populate_existing=True)
        ).all()
        return [(segment, instance) for segment, instance in rows]

    def _drafts(self, segment: UsageSegment, org: Org, upto: datetime) -> list[UsageDraft]:
        """Turn [counted_until, upto] into drafts, split at period boundaries and midnights.

        Each piece emits `ceil(elapsed) - emitted`, so however the segment is cut, its total is
        exactly its rounded length. Mutates the segment's counters.
        """
        drafts: list[UsageDraft] = []
        points = boundaries_between(
            segment.counted_until,
            upto,
            signup_at=org.signup_at,
            subscription_start=org.subscription_period_start,
            subscription_end=org.subscription_period_end,
        )
        start = segment.counted_until
        for point in [*points, upto]:
            target = rounded_minutes(segment.started_at, point)
            minutes = target - segment.emitted_minutes
            if minutes > 0:
                drafts.append(
                    UsageDraft(
                        org_id=segment.org_id,
                        instance_id=segment.instance_id,
                        segment_id=segment.id,
                        tier=segment.tier,
                        interval_start=start,
                        interval_end=point,
                        minutes=minutes,
                    )
                )
                segment.emitted_minutes = target
            if minutes > 0 or point is not upto:
                start = point
                segment.counted_until = point
        return drafts

    # -- the flusher's queue, for operations (`orz metering …`) ----------------------------
    def pending_count(self, session: Session) -> int:
        return usage_records.pending_count(session)

    def queue_counts(self, session: Session) -> dict[str, int]:
        """Usage records by state, every state present."""
        return {"pending": 0, "sent": 0, "dead": 0, **usage_records.count_by_state(session)}

    def dead_records(self, session: Session, *, limit: int) -> Sequence[UsageRecord]:
        return usage_records.dead(session, limit=limit)

    def records_in(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        period_start: datetime | None = None,
        after: datetime | None = None,
        upto: datetime | None = None,
    ) -> Sequence[UsageRecord]:
        """An org's records of one billing period, or whose interval ends in (after, upto]."""
        stmt = select(UsageRecord).where(UsageRecord.org_id == org_id)
        if period_start is not None:
            stmt = stmt.where(UsageRecord.period_start == period_start)
        if after is not None:
            stmt = stmt.where(UsageRecord.interval_end > after)
        if upto is not None:
            stmt = stmt.where(UsageRecord.interval_end <= upto)
        return session.scalars(stmt.order_by(UsageRecord.interval_end, UsageRecord.id)).all()

    def queue_stats(self, session: Session) -> tuple[int, datetime | None, int]:
        """(pending records, when the oldest pending one was written, dead records)."""
        pending, oldest = session.execute(
            select(func.count(), func.min(UsageRecord.created_at)).where(
                UsageRecord.state == RecordState.PENDING.value
            )
        ).one()
        dead = session.scalar(
            select(func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.state == RecordState.DEAD.value)
        )
        return int(pending or 0), oldest, int(dead or 0)

    def has_records(self, session: Session, org_id: uuid.UUID, *, period_start: datetime) -> bool:
        return (
            session.scalar(
                select(UsageRecord.id)
                .where(UsageRecord.org_id == org_id, UsageRecord.period_start == period_start)
                .limit(1)
            )
            is not None
        )

    def requeue(self, session: Session, ids: Sequence[uuid.UUID], *, lost: bool = False) -> int:
        """Put dead records (all of them when `ids` is empty) back in the queue. With `lost`,
        the given records marked sent are queued too: reconciliation found Polar without
        them, and Polar drops any it does have by external_id, so a resend never bills twice.
        """
        states = [RecordState.DEAD.value] + ([RecordState.SENT.value] if lost else [])
        stmt = update(UsageRecord).where(UsageRecord.state.in_(states))
        if ids:
            stmt = stmt.where(UsageRecord.id.in_(list(ids)))
        elif lost:
            raise Conflict("Name the records to resend: a blanket resend of sent ones is refused.")
        result = session.execute(
            stmt.values(
                state=RecordState.PENDING.value, claimed_by=None, claim_expires_at=None
            ).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


metering_service = MeteringService()
