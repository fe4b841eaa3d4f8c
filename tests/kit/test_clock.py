from datetime import UTC, datetime, timedelta

import pytest

from orzbob.kit.clock import ManualClock, Scheduler

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_manual_clock_stands_still_and_never_goes_back() -> None:
    clock = ManualClock(T0)
    assert clock.now() == T0
    assert clock.now() == T0
    clock.advance(90)
    assert clock.now() == T0 + timedelta(seconds=90)
    with pytest.raises(ValueError):
        clock.set(T0)


def test_advance_runs_each_job_the_right_number_of_times_in_time_order() -> None:
    clock = ManualClock(T0)
    sched = Scheduler(clock)
    calls: list[tuple[str, datetime, datetime]] = []
    sched.register(
        "minutely", timedelta(seconds=60), lambda at: calls.append(("m", at, clock.now()))
    )
    sched.register("five", timedelta(seconds=300), lambda at: calls.append(("f", at, clock.now())))

    end = sched.advance(clock, 600)

    assert end == clock.now() == T0 + timedelta(seconds=600)
    assert [c[0] for c in calls].count("m") == 10
    assert [c[0] for c in calls].count("f") == 2
    times = [c[1] for c in calls]
    assert times == sorted(times)
    # Each job saw the clock at its own run time, not at the end of the advance.
    assert all(at == seen for _, at, seen in calls)
    # Ties run in registration order.
    at_300 = [c[0] for c in calls if c[1] == T0 + timedelta(seconds=300)]
    assert at_300 == ["m", "f"]


def test_advance_in_pieces_equals_advance_at_once() -> None:
    clock = ManualClock(T0)
    sched = Scheduler(clock)
    runs: list[datetime] = []
    sched.register("j", timedelta(seconds=45), runs.append)
    for _ in range(10):
        sched.advance(clock, 31)
    assert len(runs) == 310 // 45
    assert runs == [T0 + timedelta(seconds=45 * (i + 1)) for i in range(310 // 45)]


def test_a_failing_job_does_not_stop_the_others() -> None:
    clock = ManualClock(T0)
    sched = Scheduler(clock)
    ok: list[datetime] = []

    def boom(_: datetime) -> None:
        raise RuntimeError("boom")

    sched.register("boom", timedelta(seconds=10), boom)
    sched.register("ok", timedelta(seconds=10), ok.append)
    sched.advance(clock, 30)
    assert len(ok) == 3


def test_run_pending_in_real_time_runs_a_late_job_once() -> None:
    clock = ManualClock(T0)
    sched = Scheduler(clock)
    runs: list[datetime] = []
    sched.register("j", timedelta(seconds=10), runs.append)
    clock.advance(100)
    assert sched.run_pending() == 1
    assert sched.run_pending() == 0


def test_idle_hints_skip_runs_until_another_job_does_work() -> None:
    from orzbob.kit.clock import FOREVER, Idle

    clock = ManualClock(T0)
    sched = Scheduler(clock)
    idle_runs: list[datetime] = []
    work_at = {T0 + timedelta(seconds=600)}

    def producer(at: datetime) -> int:
        return 1 if at in work_at else 0

    def consumer(at: datetime) -> Idle:
        idle_runs.append(at)
        return Idle(FOREVER)

    sched.register("producer", timedelta(seconds=60), producer)
    sched.register("consumer", timedelta(seconds=60), consumer)
    sched.advance(clock, 3600)
    # Ran once, slept, woke when the producer worked at 10 min (same instant, after it).
    assert idle_runs == [T0 + timedelta(seconds=60), T0 + timedelta(seconds=600)]
    # A new advance forgets hints: the consumer runs at the first interval point from now.
    sched.advance(clock, 120)
    assert idle_runs[-1] == T0 + timedelta(seconds=3600)


def test_idle_hint_with_a_time_resumes_on_the_grid() -> None:
    from orzbob.kit.clock import Idle

    clock = ManualClock(T0)
    sched = Scheduler(clock)
    runs: list[datetime] = []

    def job(at: datetime) -> Idle:
        runs.append(at)
        return Idle(at + timedelta(seconds=250))

    sched.register("j", timedelta(seconds=60), job)
    sched.advance(clock, 1000)
    assert runs == [T0 + timedelta(seconds=s) for s in (60, 360, 660, 960)]


def test_hints_are_ignored_in_real_time() -> None:
    from orzbob.kit.clock import FOREVER, Idle

    clock = ManualClock(T0)
    sched = Scheduler(clock)
    runs: list[datetime] = []
    sched.register("j", timedelta(seconds=10), lambda at: runs.append(at) or Idle(FOREVER))
    for _ in range(3):
        clock.advance(10)
        sched.run_pending()
    assert len(runs) == 3
