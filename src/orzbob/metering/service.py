"""Segments and usage records: run time turned into whole minutes, exactly once (SPEC §3)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.instances.models import Instance
from orzbob.kit.errors import Conflict
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment
from orzbob.quota.allocation import UsageDraft, allocate, allocate_many
from orzbob.quota.periods import boundaries_between

_MICROSECOND = timedelta(microseconds=1)

# Caps cut usage (SPEC §6): the throttle domain registers limiters that say, for the open
# segments of the given orgs, the latest instant each may be counted to. `closing` maps a
# segment being closed to the moment it closes (a user's pause counts up to then, not up to
# the last heartbeat). Segments a limiter does not name are not limited by it.
Limiter = Callable[
    [Session, Sequence[Org], Catalog, datetime, Mapping[uuid.UUID, datetime]],
    dict[uuid.UUID, datetime],
]
limiters: list[Limiter] = []


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

    def close_segment(
        self,
        session: Session,
        instance: Instance,
        org: Org,
        *,
        at: datetime,
        catalog: Catalog,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Close the instance's open segment at `at`, recording the minutes not yet emitted."""
        segment = self.open_segment_of(session, instance.id)
        if segment is None:
            raise Conflict(f"Instance {instance.id} has no open usage segment.")
        limit = self.limits(session, [org], catalog=catalog, now=now, closing={segment.id: at})
        end = max(min(at, limit.get(segment.id, at)), segment.counted_until)
        rows = allocate(session, org, self._drafts(segment, org, end), catalog=catalog, now=now)
        segment.ended_at = end
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
        for segment, instance in pairs:
            upto = min(now, instance.last_seen_at, limits.get(segment.id, now))
            if upto <= segment.counted_until:
                continue
            by_org[segment.org_id].extend(self._drafts(segment, orgs[segment.org_id], upto))
        return len(allocate_many(session, orgs, by_org, catalog=catalog, now=now))

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

    def pending_count(self, session: Session) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.state == RecordState.PENDING.value)
            )
            or 0
        )


metering_service = MeteringService()
