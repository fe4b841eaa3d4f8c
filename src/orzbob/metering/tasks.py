"""Periodic metering work: checkpoint open segments so running usage is seen in near real
time."""

from __future__ import annotations

import gc
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime

from psycopg.errors import DeadlockDetected
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orzbob.kit import metrics
from orzbob.kit.clock import FOREVER, Idle
from orzbob.kit.db import on_commit
from orzbob.metering.service import metering_service
from orzbob.quota.service import quota_service
from orzbob.runtime import Runtime

# Segments per transaction: per-batch statements (the cap prefilter, the period locks, the
# rollup upserts) cost about as much as per-row work at 1,000; at 2,500 a 100k-segment pass
# spends a third less database time, and a batch holds its locks for ~0.1-0.2 s.
CHECKPOINT_BATCH = 2500
# Batches in flight at once on PostgreSQL, each on its own connection: while one waits for
# the database, the next one's Python runs (alone, a pass spends about 40 % of its time
# waiting and 60 % in Python). They are disjoint sets of segments, locked in (org, id)
# order, and take period locks in key order, as batches of several workers always could.
CHECKPOINT_LANES = 2
log = logging.getLogger(__name__)


class _Feed:
    """Hands out one pass's batches in (org, id) order. A lane holds it only while it locks
    its batch, so the next lane locks the batch after while this one does the rest."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.after: tuple[uuid.UUID, uuid.UUID] | None = None  # (org id, id)
        self.first = True
        self.done = False
        self.idle = False
        self.in_flight = 0  # batches locked and not yet committed or abandoned
        self.written = 0
        self.gauge_read = False


def checkpoint_open_segments(runtime: Runtime) -> int | Idle:
    """One pass over every open segment, a batch per transaction (two in flight at once on
    PostgreSQL, see `CHECKPOINT_LANES`). Segments another process holds are skipped; they
    are checkpointed by that process or on the next pass. The last batch's transaction also
    reads today's usage for the gauge (set once it commits) when no other batch is still
    in flight; otherwise it is read once they have all committed."""
    now = runtime.clock.now()
    feed = _Feed()
    lanes = CHECKPOINT_LANES if runtime.engine.dialect.name == "postgresql" else 1
    with _collector_paused():
        if lanes == 1:
            _lane(runtime, feed, now)
        else:
            with ThreadPoolExecutor(lanes, thread_name_prefix="checkpoint") as pool:
                running = [pool.submit(_lane, runtime, feed, now) for _ in range(lanes)]
            for lane in running:
                lane.result()  # the first failure, after every lane has stopped
    if feed.idle:
        return Idle(FOREVER)
    if not feed.gauge_read:
        with runtime.read_session() as session:
            _update_daily_gauge(session, runtime.clock.now().date())
    return feed.written


class _Turn:
    """One batch's place in the pass: the (org id, id) it starts after, taken from the feed
    once (a batch run again keeps it)."""

    def __init__(self) -> None:
        self.taken = False
        self.after: tuple[uuid.UUID, uuid.UUID] | None = None
        self.first = False
        self.last = False


def _lane(runtime: Runtime, feed: _Feed, now: datetime) -> None:
    """Checkpoint batches until the feed is done; a failure stops the other lanes at their
    next batch. A batch that PostgreSQL aborts to break a deadlock runs again, once: the
    cap limiter locks a few orgs' period rows before allocation locks all of the batch's,
    so a batch of another lane (or worker) sharing those orgs can take two of them in the
    other order."""
    while not feed.done:
        turn = _Turn()
        try:
            try:
                _batch(runtime, feed, now, turn)
            except (DBAPIError, DeadlockDetected) as exc:
                # The driver's own error where a bulk write went straight to it (`kit.bulk`).
                cause = exc.orig if isinstance(exc, DBAPIError) else exc
                if not (turn.taken and isinstance(cause, DeadlockDetected)):
                    raise
                log.warning("a checkpoint batch was aborted by a deadlock; running it again")
                _batch(runtime, feed, now, turn)
        except BaseException:
            feed.done = True
            raise


def _batch(runtime: Runtime, feed: _Feed, now: datetime, turn: _Turn) -> None:
    """Lock the batch after `turn`'s (taking the next turn from the feed, which is held
    only for that statement), then checkpoint it, in one transaction."""
    with runtime.session() as session:
        with feed.lock:
            fresh = not turn.taken  # a batch run again leaves the feed as it is
            if fresh:
                if feed.done:
                    return
                turn.taken, turn.after, turn.first = True, feed.after, feed.first
                feed.first = False
            segments = metering_service.lock_open_batch(
                session, after=turn.after, limit=CHECKPOINT_BATCH
            )
            if fresh:
                turn.last = len(segments) < CHECKPOINT_BATCH
                if segments:
                    feed.after = (segments[-1].org_id, segments[-1].id)
                feed.done = turn.last
            feed.in_flight += 1
        try:
            if turn.first and not segments and not metering_service.has_open_segments(session):
                # Nothing runs (not merely held by another transaction): only a start,
                # which wakes jobs, changes that.
                feed.idle = True
                return
            n = metering_service.checkpoint_locked(
                session, segments, catalog=runtime.catalog, now=now
            )
            with feed.lock:
                alone = feed.in_flight == 1
            if turn.last and alone:
                _update_daily_gauge(session, runtime.clock.now().date())
                feed.gauge_read = True
        finally:
            with feed.lock:
                feed.in_flight -= 1
    with feed.lock:
        feed.written += n


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a pass. A batch allocates about a million
    objects (rows, drafts, allocations, parameters) that live until it ends, so collections
    triggered by those allocations find almost nothing to free, yet the older generations'
    walk the whole heap: about 40% of a 100k-segment pass's client CPU. Cycles the batches
    leave behind (session and ORM state) are collected after the pass. Collection stays off
    for other threads of the process for that long too, which costs them memory, not
    correctness."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _update_daily_gauge(session: Session, today: date) -> None:
    minutes = quota_service.minutes_on(session, today)
    on_commit(session, lambda: metrics.daily_usage_hours.set(minutes / 60))


def flush_usage(runtime: Runtime) -> int | Idle:
    """Ship pending usage records to Polar (registered only when billing is enabled)."""
    flusher = runtime.flusher
    assert flusher is not None, "flush_usage is registered only with a flusher"
    report = flusher.flush()
    if report.stopped:
        log.warning("flush stopped early: %s", report.stopped)
    if report.batches == 0:
        return Idle(FOREVER)
    return 0  # shipping changes nothing other jobs read


def flush_full_batches(runtime: Runtime) -> int:
    """Real-time helper: flush before the interval when a full batch is already waiting."""
    flusher = runtime.flusher
    assert flusher is not None, "flush_full_batches is registered only with a flusher"
    with runtime.session() as session:
        waiting = metering_service.pending_up_to(session, flusher.batch_size)
    if waiting >= flusher.batch_size:
        flusher.flush()
    return 0
