"""Ships unsent usage records to Polar (docs/spec.md §3): batches, retries, dead letters.

Records are claimed with a lease in a short transaction (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several flushers never claim the same record), then sent with no lock held,
then marked. Safe with any number of flushers:

* the lease is short (30 s) and renewed every third of it while the batch is in flight, so
  it outlives any run of retries (a 429 with `Retry-After: 60`, eight times) and no other
  flusher re-sends a batch that is still being sent;
* a flusher that dies stops renewing: its claims lapse within one lease, and a flusher
  restarted under the same stable worker id (`ORZBOB_WORKER_ID`) takes them back at once;
* whatever is re-sent after a crash, Polar drops as a duplicate by `external_id`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from orzbob.kit import metrics
from orzbob.kit.db import session_scope
from orzbob.kit.leases import renewing
from orzbob.metering.models import RecordState
from orzbob.metering.repository import usage_records
from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable

log = logging.getLogger(__name__)

EVENT_NAME = "orzbob.compute"


def polar_event(record: Any) -> dict[str, Any]:
    """The Polar event of a usage record (docs/spec.md §3, /v1/events/ingest)."""
    record_id = str(record.id)
    return {
        "name": EVENT_NAME,
        "external_customer_id": str(record.org_id),
        "external_id": record_id,
        "timestamp": record.interval_end.isoformat(),
        "metadata": {
            # Polar never returns an event's external_id, so reconciliation matches on this
            # copy of it.
            "record_id": record_id,
            "instance_id": str(record.instance_id),
            "tier": record.tier,
            "minutes": record.minutes,
            "billable_minutes": record.billable_minutes,
            "small_minutes": record.small_minutes,
            "period_start": record.period_start.isoformat(),
        },
    }


# `polar_event` as JSON text, filled from a claimed row whose ids and timestamps are text
# already: the flusher's per-record cost is this one format, not a dict then an encoder.
# Ids and ISO timestamps need no escaping; the tier is encoded by `_json_str`.
_EVENT_JSON = (
    '{"name":' + json.dumps(EVENT_NAME) + ',"external_customer_id":"%s","external_id":"%s",'
    '"timestamp":"%s","metadata":{"record_id":"%s","instance_id":"%s","tier":%s,'
    '"minutes":%d,"billable_minutes":%d,"small_minutes":%d,"period_start":"%s"}}'
)


@lru_cache(maxsize=256)
def _json_str(value: str) -> str:
    return json.dumps(value)


def event_json(row: Any) -> str:
    """`polar_event` of a claimed row (ids and timestamps as text), as JSON text."""
    return _EVENT_JSON % (
        row.org_id,
        row.id,
        row.interval_end,
        row.id,
        row.instance_id,
        _json_str(row.tier),
        row.minutes,
        row.billable_minutes,
        row.small_minutes,
        row.period_start,
    )


@dataclass
class FlushReport:
    sent: int = 0
    duplicates: int = 0
    dead: int = 0
    batches: int = 0
    retries: int = 0
    stopped: str | None = None


class _Stop(Exception):
    pass


def _merge(into: FlushReport, part: FlushReport) -> None:
    into.sent += part.sent
    into.duplicates += part.duplicates
    into.dead += part.dead
    into.retries += part.retries
    into.stopped = into.stopped or part.stopped


@dataclass
class Flusher:
    sessions: sessionmaker[Session]
    gateway: PolarGateway
    batch_size: int = 1000
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0
    lease: timedelta = timedelta(seconds=30)
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    # Batches on the wire at once: the database work of one (claim, mark) overlaps the HTTP
    # round trip of another.
    in_flight: int = 2

    def flush(self, *, max_batches: int | None = None) -> FlushReport:
        """Send pending records until none are left (or `max_batches`); a failure that
        outlasts the retries stops this run and leaves the records pending. Up to
        `in_flight` batches are on the wire at once (each its own claim, lease and mark, as
        if sent by separate flushers), over the gateway's kept-alive connections."""
        report = FlushReport()
        lock = threading.Lock()
        done = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                while not done.is_set():
                    with lock:
                        if max_batches is not None and report.batches >= max_batches:
                            return
                        report.batches += 1  # reserved before the claim, for max_batches
                    batch = self._claim()
                    if not batch:
                        with lock:
                            report.batches -= 1
                        done.set()
                        return
                    mine = FlushReport()
                    try:
                        with (
                            metrics.flush_duration_seconds.time(),
                            self._renewing([i for i, _ in batch]),
                        ):
                            self._ship(batch, mine)
                    except _Stop as stop:
                        mine.stopped = str(stop)
                        done.set()
                    finally:
                        with lock:
                            _merge(report, mine)
            except BaseException as exc:  # re-raised by the caller's thread
                done.set()
                errors.append(exc)

        try:
            if self.in_flight <= 1:
                run()
            else:
                threads = [
                    threading.Thread(target=run, name=f"flusher-{n}", daemon=True)
                    for n in range(self.in_flight)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            if errors:
                raise errors[0]
        finally:
            self.update_gauges()
        return report

    # -- claiming and marking ----------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One short transaction of the flusher's own bookkeeping. On PostgreSQL its commit
        does not wait for the WAL flush: a crash may lose only the last claims or marks,
        which is safe by design (a lost lease lapses or is reclaimed, a lost mark resends
        records that Polar drops by `external_id`)."""
        with session_scope(self.sessions) as s:
            usage_records.commit_without_flush_wait(s)
            yield s

    def _claim(self) -> list[tuple[str, str]]:
        """Lease the next batch in one statement: an UPDATE of the oldest unleased pending
        records (picked `FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent flushers
        never pick the same ones) that returns what their events need. Returns (record
        id, event as JSON text) in id order."""
        now = datetime.now(UTC)
        with self._tx() as s:
            rows = usage_records.claim(
                s,
                worker_id=self.worker_id,
                now=now,
                until=now + self.lease,
                limit=self.batch_size,
            )
        # Text ids sort as the UUIDs do (fixed-width lower-case hex).
        return [(r.id, event_json(r)) for r in sorted(rows, key=lambda r: r.id)]

    def _renewing(self, ids: list[str]) -> AbstractContextManager[None]:
        """Keep the batch's lease alive while it is in flight (retries included)."""
        return renewing(lambda: self._extend(ids), self.lease, name="flusher")

    def _extend(self, ids: list[str]) -> None:
        with self._tx() as s:
            usage_records.extend_claims(
                s, ids, worker_id=self.worker_id, until=datetime.now(UTC) + self.lease
            )

    def reclaim_own(self) -> int:
        """Release the claims a previous run under this worker id left behind (it crashed),
        so they ship now instead of when their lease lapses. Call once at start, and only
        with a worker id no other live process uses."""
        with self._tx() as s:
            n = usage_records.release_claims_of(s, self.worker_id)
        if n:
            log.info("took back %d usage records claimed by %s before a restart", n, self.worker_id)
        return n

    def _mark(self, ids: list[str], **values: Any) -> int:
        if not ids:
            return 0
        with self._tx() as s:
            return usage_records.mark_claimed(s, ids, worker_id=self.worker_id, **values)

    def _release(self, ids: list[str], error: str) -> None:
        self._mark(ids, last_error=error[:2000])

    def _dead(self, ids: list[str], error: str, report: FlushReport) -> None:
        n = self._mark(ids, state=RecordState.DEAD.value, last_error=error[:2000])
        report.dead += n
        metrics.usage_meter_dead_total.inc(n)
        log.error("usage records moved to dead-letter: %d (%s)", n, error)

    # -- sending -----------------------------------------------------------------------
    def _ship(self, batch: list[tuple[str, str]], report: FlushReport) -> None:
        attempt = 0
        while batch:
            try:
                result = self.gateway.ingest_json([event for _, event in batch])
            except PolarUnavailable as exc:
                attempt += 1
                report.retries += 1
                metrics.usage_meter_failures_total.labels(reason=exc.reason).inc()
                if attempt >= self.max_attempts:
                    self._release([i for i, _ in batch], str(exc))
                    raise _Stop(f"giving up for now after {attempt} attempts: {exc}") from exc
                self.sleep(self._delay(attempt, exc.retry_after))
                continue
            except PolarRejected as exc:
                metrics.usage_meter_failures_total.labels(reason=f"http_{exc.status}").inc()
                if exc.blocking:
                    self._release([i for i, _ in batch], str(exc))
                    log.error("Polar refuses the flusher's credentials: %s", exc)
                    raise _Stop(str(exc)) from exc
                if exc.by_index:
                    # Polar validates all-or-nothing: drop the named bad events, resend the rest.
                    bad = {i: m for i, m in exc.by_index.items() if 0 <= i < len(batch)}
                    for i, message in bad.items():
                        self._dead([batch[i][0]], message, report)
                    batch = [item for i, item in enumerate(batch) if i not in bad]
                    continue
                if len(batch) == 1:
                    self._dead([batch[0][0]], str(exc), report)
                    return
                half = len(batch) // 2
                self._ship(batch[:half], report)
                self._ship(batch[half:], report)
                return
            sent = self._mark(
                [i for i, _ in batch],
                state=RecordState.SENT.value,
                sent_at=datetime.now(UTC),
                last_error=None,
            )
            report.sent += sent
            report.duplicates += result.duplicates
            metrics.usage_meter_sent_total.inc(sent)
            metrics.usage_meter_duplicates_total.inc(result.duplicates)
            return

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        jittered = backoff * self.rng.uniform(0.5, 1.5)
        if retry_after is not None:
            # Polar said when; never earlier, and a little jitter so flushers do not stampede.
            return float(retry_after) + self.rng.uniform(0, self.base_delay)
        return jittered

    def update_gauges(self) -> None:
        with session_scope(self.sessions) as s:
            count, oldest = usage_records.pending_stats(s)
        metrics.usage_meter_queue.set(count)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.usage_meter_oldest_unsent_seconds.set(max(0.0, age))
