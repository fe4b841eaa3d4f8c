"""Periodic metering work: checkpoint open segments so running usage is seen in near real
time."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

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
log = logging.getLogger(__name__)


def checkpoint_open_segments(runtime: Runtime) -> int | Idle:
    """One pass over every open segment, a batch per transaction. Segments another process
    holds are skipped; they are checkpointed by that process or on the next pass. The last
    batch's transaction also reads today's usage for the gauge (set once it commits)."""
    now = runtime.clock.now()
    last: uuid.UUID | None = None
    written = 0
    while True:
        with _collector_paused(), runtime.session() as session:
            n, seen = metering_service.checkpoint_batch(
                session, after=last, limit=CHECKPOINT_BATCH, catalog=runtime.catalog, now=now
            )
            if last is None and not seen and not metering_service.has_open_segments(session):
                # Nothing runs (not merely held by another transaction): only a start, which
                # wakes jobs, changes that.
                return Idle(FOREVER)
            if len(seen) < CHECKPOINT_BATCH:
                _update_daily_gauge(session, runtime.clock.now().date())
        written += n
        if len(seen) < CHECKPOINT_BATCH:
            return written
        last = seen[-1]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during one batch. A batch allocates about a million
    objects (rows, drafts, allocations, parameters) that live until it ends, so collections
    triggered by those allocations find almost nothing to free, yet the older generations'
    walk the whole heap: about 40% of a 100k-segment pass's client CPU. Cycles the batch
    leaves behind (session and ORM state) are collected after it. Collection stays off for
    other threads of the process for that long too, which costs them memory, not
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
