"""The test clock: stands still, and moves only when staff advance it (docs/spec.md §10).

These move the process's clock and run the periodic jobs that fall due, each job in its own
transactions, so they take the runtime and own their transactions like a task; what they
read and write goes through `testclock.service`."""

from __future__ import annotations

import threading
from datetime import datetime

from orzbob.kit.clock import ManualClock
from orzbob.kit.db import session_scope
from orzbob.kit.errors import Conflict, NotFound
from orzbob.runtime import Runtime
from orzbob.testclock.service import test_clock_service

MAX_ADVANCE_SECONDS = 400 * 86400
_advance_lock = threading.Lock()


def require_test_clock(runtime: Runtime) -> ManualClock:
    clock = runtime.manual_clock
    if not runtime.settings.test_clock or clock is None:
        raise NotFound("The test clock is not enabled on this service (ORZBOB_TEST_CLOCK=true).")
    return clock


def restore(runtime: Runtime) -> None:
    """Resume a persisted test clock if it is ahead of real time."""
    clock = require_test_clock(runtime)
    with runtime.session() as session:
        persisted = test_clock_service.persisted_now(session)
    if persisted is not None and persisted > clock.now():
        clock.set(persisted)
        for job in runtime.scheduler.jobs:
            job.next_run = max(job.next_run, persisted + job.interval)


def share(runtime: Runtime) -> None:
    """Make this process follow the persisted test clock: API replicas that run no jobs and
    `orz worker` processes, so one advance moves every process of the deployment."""
    runtime.shared_test_clock = True


def is_shared(runtime: Runtime) -> bool:
    return runtime.shared_test_clock


def follow(runtime: Runtime) -> bool:
    """Catch up with the persisted test clock; a process with jobs runs every job that falls
    due on the way, in order (as an advance would). Returns whether the clock moved."""
    clock = require_test_clock(runtime)
    with session_scope(runtime.read_sessions) as session:
        target = test_clock_service.persisted_now(session)
    if target is None or target <= clock.now():
        return False
    if runtime.scheduler.jobs:
        runtime.scheduler.advance(clock, (target - clock.now()).total_seconds())
    else:
        clock.set(target)
    return True


def advance(runtime: Runtime, seconds: int) -> tuple[datetime, int]:
    """Advance the test clock, running every periodic job that falls due, in order."""
    clock = require_test_clock(runtime)
    if not _advance_lock.acquire(blocking=False):
        raise Conflict("Another test-clock advance is running; retry when it has finished.")
    try:
        if is_shared(runtime):
            follow(runtime)  # start from where the deployment's clock is
        before = sum(j.runs for j in runtime.scheduler.jobs)
        now = runtime.scheduler.advance(clock, seconds)
        with runtime.session() as session:
            test_clock_service.persist(session, now)
        return now, sum(j.runs for j in runtime.scheduler.jobs) - before
    finally:
        _advance_lock.release()
