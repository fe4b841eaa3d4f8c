"""Segments and usage records: run time turned into whole minutes, exactly once
(docs/spec.md §3)."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, ColumnExpressionArgument
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, OrgFacts
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import new_ids
from orzbob.kit.errors import Conflict, Unprocessable
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment
from orzbob.metering.repository import usage_records, usage_segments
from orzbob.quota.allocation import Allocation, UsageDraft, allocate_many, org_periods
from orzbob.quota.periods import OrgPeriods

_MICROSECOND = timedelta(microseconds=1)

# Caps cut usage (docs/spec.md §6): the throttle domain registers limiters that say, for the open
# segments of the given orgs, the latest instant each may be counted to. `closing` maps a
# segment being closed to the moment it closes (a user's pause counts up to then, not up to
# the last heartbeat). Segments a limiter does not name are not limited by it.
Limiter = Callable[
    [Session, Sequence[OrgFacts], Catalog, datetime, Mapping[uuid.UUID, datetime]],
    dict[uuid.UUID, datetime],
]
limiters: list[Limiter] = []

# Moments past which an org's usage must not be recorded yet, by org id: a plan change that
# fell due and is not applied yet is a boundary, like a period end (the polar domain
# registers its scheduled changes here through `install_hooks`).
UsageCut = Callable[[Session, Collection[uuid.UUID], datetime], dict[uuid.UUID, datetime]]
usage_cuts: list[UsageCut] = []

# Called once usage records are written, in the same transaction, with the rows written (the
# period rows they touched are locked) and their orgs by id (every org of a row, maybe more).
# Higher domains register here (alerts evaluate thresholds) from `orzbob.hooks.install_hooks`.
UsageRecordedHook = Callable[
    [Session, Sequence[Mapping[str, Any]], Mapping[uuid.UUID, OrgFacts], Catalog, datetime], None
]
usage_recorded_hooks: list[UsageRecordedHook] = []

# Running time is counted only up to an instance's last sign of life (docs/spec.md §3). The
# instances domain, above this one, registers how to read it: given the column holding an
# instance id, a correlated expression for that instance's `last_seen_at`, so the
# checkpoint reads segments and last-seen times in one query.
LastSeen = Callable[[ColumnExpressionArgument[uuid.UUID]], ColumnElement[datetime]]
last_seen_hooks: list[LastSeen] = []

# The columns of a usage record, in the order records are appended (`COPY` on PostgreSQL).
RECORD_COLUMNS = (
    "id",
    "org_id",
    "instance_id",
    "segment_id",
    "tier",
    "plan_id",
    "interval_start",
    "interval_end",
    "period_start",
    "minutes",
    "included_minutes",
    "overage_minutes",
    "billable_minutes",
    "small_minutes",
    "state",
    "claimed_by",
    "claim_expires_at",
    "attempts",
    "last_error",
    "created_at",
    "sent_at",
)
_PENDING = RecordState.PENDING.value
_COLUMN_INDEX = {name: i for i, name in enumerate(RECORD_COLUMNS)}


class RecordRow(Mapping[str, Any]):
    """A usage record just written, read by column name: a view over its values (in
    `RECORD_COLUMNS` order), so a batch of thousands builds no dictionary per record."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[Any, ...]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[_COLUMN_INDEX[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(RECORD_COLUMNS)

    def __len__(self) -> int:
        return len(RECORD_COLUMNS)

    def __repr__(self) -> str:
        return f"RecordRow({dict(self)!r})"


class RunningInstance(Protocol):
    """What metering needs of an instance: whose it is and its tier."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def org_id(self) -> uuid.UUID: ...

    @property
    def tier(self) -> str: ...


@dataclass(slots=True)
class OpenSegment:
    """An open segment as the checkpoint reads it: plain values, no ORM object."""

    id: uuid.UUID
    org_id: uuid.UUID
    instance_id: uuid.UUID
    tier: str
    started_at: datetime
    emitted_minutes: int
    counted_until: datetime
    last_seen_at: datetime


def last_seen_of(instance_id: ColumnExpressionArgument[uuid.UUID]) -> ColumnElement[datetime]:
    if not last_seen_hooks:
        raise RuntimeError(
            "no last-seen source registered: call orzbob.hooks.install_hooks() first"
        )
    return last_seen_hooks[0](instance_id)


def _record_values(a: Allocation, record_id: uuid.UUID, now: datetime) -> tuple[Any, ...]:
    """A usage record's values, in `RECORD_COLUMNS` order."""
    d = a.draft
    return (
        record_id,
        d.org_id,
        d.instance_id,
        d.segment_id,
        d.tier,
        a.plan_id,
        d.interval_start,
        d.interval_end,
        a.period_start,
        d.minutes,
        a.included,
        a.overage,
        a.billable,
        a.small,
        _PENDING,
        None,
        None,
        0,
        None,
        now,
        None,
    )


def rounded_minutes(start: datetime, end: datetime) -> int:
    """Minutes from `start` to `end`, rounded up: 61 s is 2 minutes, 60 s is 1."""
    micros = (end - start) // _MICROSECOND
    return -(-micros // 60_000_000) if micros > 0 else 0


class MeteringService:
    def limits(
        self,
        session: Session,
        orgs: Sequence[OrgFacts],
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

    def open_segment(
        self, session: Session, instance: RunningInstance, *, at: datetime
    ) -> UsageSegment:
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
        return usage_segments.open_of_instance(session, instance_id)

    def has_open_segments(self, session: Session) -> bool:
        return usage_segments.any_open(session)

    def open_segments_of(
        self, session: Session, instance_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, UsageSegment]:
        """The open segments of these instances, locked in id order."""
        return {s.instance_id: s for s in usage_segments.open_of_instances(session, instance_ids)}

    def close_segments(
        self,
        session: Session,
        org: Org,
        closes: Sequence[tuple[RunningInstance, datetime]],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> list[RecordRow]:
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
        periods = org_periods(org)
        for instance, at in closes:
            segment = segments[instance.id]
            end = max(min(at, limit.get(segment.id, at)), segment.counted_until)
            drafts.extend(self._drafts(segment, periods, end))
            segment.ended_at = end
        rows = self.record(session, org, drafts, catalog=catalog, now=now)
        session.flush()
        return rows

    def lock_open_batch(
        self, session: Session, *, after: tuple[uuid.UUID, uuid.UUID] | None, limit: int
    ) -> list[OpenSegment]:
        """A checkpoint batch's first step: the next `limit` open segments by org id and id
        (after the (org id, id) `after`), locked in one query, skipping those another
        transaction holds, with their instance's last sign of life."""
        return [
            OpenSegment(*row)
            for row in usage_segments.lock_open_batch(
                session, last_seen_of, after=after, limit=limit
            )
        ]

    def checkpoint_locked(
        self, session: Session, segments: list[OpenSegment], *, catalog: Catalog, now: datetime
    ) -> int:
        """The rest of a checkpoint batch, for segments `lock_open_batch` gave: emit the
        minutes they have accrued up to their instance's last sign of life (never past it, a
        cap or a due plan change), set-based: allocation runs over plain values, records are
        appended in one batch and the segments' counters updated in one statement. Returns
        the records written."""
        if not segments:
            return 0
        org_ids = sorted({seg.org_id for seg in segments})
        orgs = account_service.org_facts_by_id(session, org_ids)
        limits = self.limits(session, [orgs[o] for o in org_ids], catalog=catalog, now=now)
        cuts = self._cuts(session, org_ids, now)
        by_org: dict[uuid.UUID, list[UsageDraft]] = defaultdict(list)
        periods = {org_id: org_periods(org) for org_id, org in orgs.items()}
        moved: list[tuple[uuid.UUID, int, datetime]] = []
        # Most batches have neither limits nor cuts: no lookup by UUID (hashed in Python)
        # for each of thousands of segments then.
        for seg in segments:
            upto = min(now, seg.last_seen_at)
            if limits:
                upto = min(upto, limits.get(seg.id, now))
            if cuts:
                upto = min(upto, cuts.get(seg.org_id, now))
            if upto <= seg.counted_until:
                continue
            by_org[seg.org_id].extend(self._drafts(seg, periods[seg.org_id], upto))
            moved.append((seg.id, seg.emitted_minutes, seg.counted_until))
        rows = self.record_many(session, orgs, by_org, catalog=catalog, now=now)
        usage_segments.save_counters(session, moved)
        return len(rows)

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
        periods = org_periods(org)
        for segment, last_seen_at in pairs:
            upto = min(at, last_seen_at, limits.get(segment.id, at))
            if upto > segment.counted_until:
                drafts.extend(self._drafts(segment, periods, upto))
        return len(self.record(session, org, drafts, catalog=catalog, now=at))

    def lock_open_segments(
        self, session: Session, org_id: uuid.UUID
    ) -> Sequence[tuple[UsageSegment, datetime]]:
        """Lock every open segment of one org, in id order, with its instance's last sign of
        life: a transaction that closes several of them takes all segment locks before any
        period lock (docs/architecture.md)."""
        rows = usage_segments.lock_open_of_org(session, org_id, last_seen_of)
        return [(segment, last_seen_at) for segment, last_seen_at in rows]

    # -- writing usage records -----------------------------------------------------------
    def record(
        self,
        session: Session,
        org: Org,
        drafts: list[UsageDraft],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> list[RecordRow]:
        """Record one org's drafts; see `record_many`."""
        return self.record_many(session, {org.id: org}, {org.id: drafts}, catalog=catalog, now=now)

    def record_many(
        self,
        session: Session,
        orgs: Mapping[uuid.UUID, OrgFacts],
        drafts_by_org: dict[uuid.UUID, list[UsageDraft]],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> list[RecordRow]:
        """Write usage records for the drafts (each org's in order): quota allocates them to
        the allowance and keeps its rollups, the records are appended in one batch (the
        outbox the flusher ships), then the usage hooks run, all in the caller's
        transaction. Returns the record rows written."""
        allocations = allocate_many(session, orgs, drafts_by_org, catalog=catalog, now=now)
        if not allocations:
            return []
        values = [
            _record_values(a, record_id, now)
            for a, record_id in zip(allocations, new_ids(len(allocations)), strict=True)
        ]
        usage_records.append(session, RECORD_COLUMNS, values)
        rows = [RecordRow(v) for v in values]
        for tier, n in Counter(a.draft.tier for a in allocations).items():
            metrics.usage_records_total.labels(tier=tier).inc(n)
        for hook in usage_recorded_hooks:
            hook(session, rows, orgs, catalog, now)
        return rows

    def _drafts(
        self, segment: UsageSegment | OpenSegment, periods: OrgPeriods, upto: datetime
    ) -> list[UsageDraft]:
        """Turn [counted_until, upto] into drafts, split at period boundaries and midnights.

        Each piece emits `ceil(elapsed) - emitted`, so however the segment is cut, its total is
        exactly its rounded length. Mutates the segment's counters.
        """
        drafts: list[UsageDraft] = []
        points = periods.boundaries(segment.counted_until, upto)
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
        return usage_records.records_of(
            session, org_id, period_start=period_start, after=after, upto=upto
        )

    def export_records(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        after: datetime,
        upto: datetime,
        max_records: int,
    ) -> Sequence[UsageRecord]:
        """An org's records whose interval ends in (after, upto], by interval end; more than
        `max_records` of them is Unprocessable (narrow the range)."""
        count = usage_records.count_ending_in(session, org_id, after=after, upto=upto)
        if count > max_records:
            raise Unprocessable(
                f"{count} records match; narrow the range to at most {max_records} records."
            )
        return usage_records.records_of(session, org_id, after=after, upto=upto)

    def pending_up_to(self, session: Session, limit: int) -> int:
        """How many records wait to be shipped, counting no further than `limit`."""
        return usage_records.pending_up_to(session, limit)

    def queue_stats(self, session: Session) -> tuple[int, datetime | None, int]:
        """(pending records, when the oldest pending one was written, dead records)."""
        pending, oldest = usage_records.pending_stats(session)
        return pending, oldest, usage_records.dead_count(session)

    def has_records(self, session: Session, org_id: uuid.UUID, *, period_start: datetime) -> bool:
        return usage_records.any_in_period(session, org_id, period_start=period_start)

    def requeue(self, session: Session, ids: Sequence[uuid.UUID], *, lost: bool = False) -> int:
        """Put dead records (all of them when `ids` is empty) back in the queue. With `lost`,
        the given records marked sent are queued too: reconciliation found Polar without
        them, and Polar drops any it does have by external_id, so a resend never bills twice.
        """
        states = [RecordState.DEAD.value] + ([RecordState.SENT.value] if lost else [])
        if not ids and lost:
            raise Conflict("Name the records to resend: a blanket resend of sent ones is refused.")
        return usage_records.requeue(session, states, ids)


metering_service = MeteringService()
