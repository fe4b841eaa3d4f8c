"""The checkpoint pass as a whole: its transactions and statements, its batches, the Idle
answer, the daily gauge, and (PostgreSQL) heap-only counter updates."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.orm import Session

from orzbob.instances.models import Instance
from orzbob.instances.service import instance_service
from orzbob.kit import metrics
from orzbob.kit.clock import Idle, ManualClock
from orzbob.metering import tasks
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.metering.service import RECORD_COLUMNS, RecordRow, metering_service
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


def _fleet(runtime: Runtime, make_org: Callable[..., OrgHandle], orgs: int, per_org: int) -> None:
    for n in range(orgs):
        org = make_org(name=f"Org {n}", plan=("usage-only", "base-plus-usage")[n % 2])
        with runtime.session() as s:
            for _ in range(per_org):
                instance_service.create(
                    s, org.id, tier="small", name=None, catalog=runtime.catalog,
                    now=runtime.clock.now(),
                )  # fmt: skip


def _beat_all(runtime: Runtime) -> None:
    with runtime.session() as s:
        s.execute(
            update(Instance).values(
                last_seen_at=runtime.clock.now(), last_active_at=runtime.clock.now()
            )
        )


@contextmanager
def _counting(engine: Engine) -> Iterator[dict[str, int]]:
    """Transactions begun and statements sent through SQLAlchemy while the block runs (the
    driver-level `COPY` and `UPDATE … FROM unnest` of PostgreSQL are not seen here)."""
    seen = {"transactions": 0, "statements": 0}

    def on_begin(conn: Any) -> None:
        seen["transactions"] += 1

    def on_statement(*_: Any) -> None:
        seen["statements"] += 1

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_statement)


def _minutes(runtime: Runtime) -> int:
    with runtime.session() as s:
        return int(s.scalar(select(func.coalesce(func.sum(UsageRecord.minutes), 0))) or 0)


def test_a_pass_of_one_batch_is_one_transaction_with_a_fixed_statement_count(
    runtime: Runtime, clock: ManualClock, make_org: Callable[..., OrgHandle], is_postgres: bool
) -> None:
    """The per-pass fixed cost: no separate 'anything open?' or gauge transactions, and the
    same statements whatever the number of segments in the batch (set-based); a pass that
    is the first usage of some periods adds the statements that create them."""
    _fleet(runtime, make_org, orgs=2, per_org=2)
    counts = []
    # The first pass creates the 2 orgs' periods; the second finds them; the third also
    # meets 3 new orgs (and 9 more segments).
    for orgs in (0, 0, 3):
        _fleet(runtime, make_org, orgs=orgs, per_org=3)
        clock.advance(60)
        _beat_all(runtime)
        with _counting(runtime.engine) as seen:
            written = checkpoint_open_segments(runtime)
        assert isinstance(written, int) and written > 0
        counts.append(dict(seen))
    first_usage, steady, with_new_orgs = counts
    assert first_usage == with_new_orgs
    assert steady["transactions"] == first_usage["transactions"] == 1
    # The batch's segments, their orgs, the cap prefilter (oldest counted, the sweep rule;
    # no spend bound: no org here has a spend limit), due plan changes, the period locks,
    # alerts (tier totals, rows) and the gauge; SQLite also shows its BEGIN and the writes
    # PostgreSQL sends through the driver (period update, rollup upserts, the records, the
    # counters).
    assert steady["statements"] == (9 if is_postgres else 15)
    # New periods: inserted (through the driver on PostgreSQL), then locked.
    assert first_usage["statements"] == steady["statements"] + (1 if is_postgres else 2)


def test_nothing_open_is_idle_and_sets_no_gauge(runtime: Runtime) -> None:
    metrics.daily_usage_hours.set(-1)
    with _counting(runtime.engine) as seen:
        assert isinstance(checkpoint_open_segments(runtime), Idle)
    assert seen["transactions"] == 1
    assert metrics.daily_usage_hours._value.get() == -1


def test_the_gauge_shows_today_once_the_last_batch_commits(
    runtime: Runtime, clock: ManualClock, make_org: Callable[..., OrgHandle]
) -> None:
    _fleet(runtime, make_org, orgs=1, per_org=2)
    clock.advance(600)
    _beat_all(runtime)
    assert checkpoint_open_segments(runtime) == 2
    assert metrics.daily_usage_hours._value.get() == pytest.approx(20 / 60)


def test_many_small_batches_count_every_minute_once(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches end anywhere within an org's segments; each segment's usage is still its
    rounded run time, across passes."""
    monkeypatch.setattr(tasks, "CHECKPOINT_BATCH", 2)
    _fleet(runtime, make_org, orgs=3, per_org=3)
    for seconds in (61, 60, 600, 61, 3599):
        clock.advance(seconds)
        _beat_all(runtime)
        assert checkpoint_open_segments(runtime) == 9, seconds
    elapsed = 61 + 60 + 600 + 61 + 3599
    assert _minutes(runtime) == 9 * -(-elapsed // 60)
    with runtime.session() as s:
        assert set(s.scalars(select(UsageSegment.emitted_minutes))) == {-(-elapsed // 60)}


def test_segments_held_by_another_transaction_are_skipped_not_idle(
    runtime: Runtime, clock: ManualClock, make_org: Callable[..., OrgHandle], is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("SKIP LOCKED: SQLite has one writer at a time")
    _fleet(runtime, make_org, orgs=1, per_org=1)
    clock.advance(120)
    _beat_all(runtime)
    with Session(runtime.engine) as other:
        other.execute(select(UsageSegment.id).with_for_update())
        assert checkpoint_open_segments(runtime) == 0
    assert checkpoint_open_segments(runtime) == 1
    assert _minutes(runtime) == 2


def test_counter_updates_are_heap_only(
    runtime: Runtime, clock: ManualClock, make_org: Callable[..., OrgHandle], is_postgres: bool
) -> None:
    """The segments' fillfactor leaves room on each page: the checkpoint's counter updates
    touch no index (PostgreSQL's HOT). The first pass over fresh pages is all heap-only;
    later ones are as long as pruning has freed the page (nearly always)."""
    if not is_postgres:
        pytest.skip("PostgreSQL storage")
    _fleet(runtime, make_org, orgs=4, per_org=5)
    stats = text(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
        "WHERE relname = 'usage_segments'"
    )
    total = hot_total = 0
    for n_pass in range(3):
        clock.advance(60)
        _beat_all(runtime)
        with runtime.session() as s:
            updated_before, hot_before = s.execute(stats).one()
            seen = metering_service.lock_open_batch(s, after=None, limit=100)
            n = metering_service.checkpoint_locked(
                s, seen, catalog=runtime.catalog, now=clock.now()
            )
            assert n == len(seen) == 20
            updated, hot = s.execute(stats).one()
        updated, hot = updated - updated_before, hot - hot_before
        assert updated == 20
        if n_pass == 0:
            assert hot == 20
        total, hot_total = total + updated, hot_total + hot
    assert hot_total >= total * 3 // 4
    with runtime.session() as s:
        options = s.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'usage_segments'"))
    assert "fillfactor=50" in options


def test_record_rows_read_like_the_records_written() -> None:
    values = tuple(range(len(RECORD_COLUMNS)))
    row = RecordRow(values)
    assert dict(row) == dict(zip(RECORD_COLUMNS, values, strict=True))
    assert row["minutes"] == RECORD_COLUMNS.index("minutes")
    assert len(row) == len(RECORD_COLUMNS) and list(row) == list(RECORD_COLUMNS)
    with pytest.raises(KeyError):
        row["nope"]


@pytest.mark.parametrize("enabled", [True, False])
def test_collection_pauses_for_each_batch_and_comes_back_as_it_was(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    enabled: bool,
) -> None:
    monkeypatch.setattr(tasks, "CHECKPOINT_BATCH", 2)
    _fleet(runtime, make_org, orgs=1, per_org=3)
    clock.advance(60)
    _beat_all(runtime)
    during: list[bool] = []
    batch = metering_service.checkpoint_locked

    def watched(*args: Any, **kwargs: Any) -> int:
        during.append(gc.isenabled())
        return batch(*args, **kwargs)

    monkeypatch.setattr(metering_service, "checkpoint_locked", watched)
    (gc.enable if enabled else gc.disable)()
    try:
        assert checkpoint_open_segments(runtime) == 3
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert during == [False, False]


def test_on_postgresql_the_next_batch_runs_while_one_is_in_flight(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    is_postgres: bool,
) -> None:
    """Two lanes: the first batch is held until every later batch has been worked on, which
    only a second lane can do; every minute is still counted once, and the gauge, which the
    last batch cannot read while the first is in flight, is read once both have
    committed."""
    if not is_postgres:
        pytest.skip("SQLite has one writer at a time: batches run one after another")
    monkeypatch.setattr(tasks, "CHECKPOINT_BATCH", 2)
    _fleet(runtime, make_org, orgs=3, per_org=2)
    clock.advance(600)
    _beat_all(runtime)
    second = threading.Event()
    calls: list[str] = []
    work = metering_service.checkpoint_locked

    def held(session: Session, segments: list[Any], **kwargs: Any) -> int:
        first = not calls
        calls.append(threading.current_thread().name)
        if first:
            assert second.wait(10), "no other batch ran while the first was in flight"
            time.sleep(0.2)  # still in flight when the last batch looks
            return work(session, segments, **kwargs)
        written = work(session, segments, **kwargs)
        if not segments:  # the short batch that ends the pass
            second.set()
        return written

    monkeypatch.setattr(metering_service, "checkpoint_locked", held)
    assert checkpoint_open_segments(runtime) == 6
    assert len(set(calls)) == 2
    assert _minutes(runtime) == 6 * 10
    # The gauge waits for every batch: read once they have all committed.
    assert metrics.daily_usage_hours._value.get() == pytest.approx(60 / 60)


def _four_running_in_batches_of_two(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., int]:
    """Two orgs with two instances each, run for two minutes, checkpointed two segments a
    batch; returns the batch work, for a test to wrap."""
    monkeypatch.setattr(tasks, "CHECKPOINT_BATCH", 2)
    _fleet(runtime, make_org, orgs=2, per_org=2)
    clock.advance(120)
    _beat_all(runtime)
    return metering_service.checkpoint_locked


def test_a_batch_aborted_by_a_deadlock_runs_again(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from psycopg.errors import DeadlockDetected

    work = _four_running_in_batches_of_two(runtime, clock, make_org, monkeypatch)
    failed: list[int] = []
    turn = threading.Lock()

    def once(*args: Any, **kwargs: Any) -> int:
        with turn:
            first = not failed
            failed.append(0)
        written = work(*args, **kwargs)  # its writes roll back with the batch
        if first:
            failed[0] = written
            raise DeadlockDetected("deadlock detected")
        return written

    monkeypatch.setattr(metering_service, "checkpoint_locked", once)
    assert checkpoint_open_segments(runtime) == 4
    # Batches of 2, 2 and none (the short one that ends the pass); the first ran twice.
    assert failed[0] == 2 and len(failed) == 4
    assert _minutes(runtime) == 4 * 2
    assert "deadlock" in caplog.text


def test_a_failing_batch_stops_the_pass_and_loses_nothing(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = _four_running_in_batches_of_two(runtime, clock, make_org, monkeypatch)
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> int:
        first = not calls
        calls.append(1)
        written = work(*args, **kwargs)
        if first:
            raise RuntimeError("boom")
        return written

    monkeypatch.setattr(metering_service, "checkpoint_locked", broken)
    with pytest.raises(RuntimeError, match="boom"):
        checkpoint_open_segments(runtime)
    committed = _minutes(runtime)
    assert committed in (0, 2 * 2)  # the failed batch wrote nothing; another may have
    monkeypatch.setattr(metering_service, "checkpoint_locked", work)
    # The next pass counts what the failed one left, exactly once.
    assert checkpoint_open_segments(runtime) == (4 if committed == 0 else 2)
    assert _minutes(runtime) == 4 * 2


def test_an_orgs_segments_share_a_batch_however_their_ids_interleave(
    runtime: Runtime,
    clock: ManualClock,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches go by org, then id: instances started one org after another (ids A1 B1 C1 A2
    B2 C2 …) still give each batch a single org, so a pass reads and writes each org's
    periods, rollups and alerts once instead of once per instance."""
    monkeypatch.setattr(tasks, "CHECKPOINT_BATCH", 3)
    orgs = [make_org(name=f"Org {n}", plan="usage-only") for n in range(3)]
    for _ in range(3):
        for org in orgs:
            with runtime.session() as s:
                instance_service.create(
                    s, org.id, tier="small", name=None, catalog=runtime.catalog,
                    now=runtime.clock.now(),
                )  # fmt: skip
    clock.advance(300)
    _beat_all(runtime)
    batches: list[set[Any]] = []
    work = metering_service.checkpoint_locked

    def watched(session: Session, segments: list[Any], **kwargs: Any) -> int:
        if segments:
            batches.append({seg.org_id for seg in segments})
        return work(session, segments, **kwargs)

    monkeypatch.setattr(metering_service, "checkpoint_locked", watched)
    assert checkpoint_open_segments(runtime) == 9
    assert sorted(len(b) for b in batches) == [1, 1, 1]
    assert set().union(*batches) == {org.id for org in orgs}
    assert _minutes(runtime) == 9 * 5
