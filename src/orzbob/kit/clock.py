"""Injectable clocks and the periodic-job scheduler that a test clock drives."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from orzbob.kit.metrics import job_failures_total

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that stands still until moved; used by the test clock and by tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or utcnow()).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("the clock cannot move backwards")
            self._now = when.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


@dataclass(frozen=True)
class Idle:
    """A job's answer: nothing to do before `until`, unless something else changes.

    Any job run that returns a positive amount of work clears every hint, so a skipped job
    wakes as soon as another job (or an advance) may have given it work.
    """

    until: datetime


FOREVER = datetime.max.replace(tzinfo=UTC)
JobFn = Callable[[datetime], object]


@dataclass
class Job:
    name: str
    interval: timedelta
    fn: JobFn
    next_run: datetime
    runs: int = field(default=0)
    idle_until: datetime | None = None


def _align(job: Job, at: datetime) -> None:
    """Move a job's next run to its first interval point at or after `at`."""
    if job.next_run < at:
        job.next_run += job.interval * -((job.next_run - at) // job.interval)


class Scheduler:
    """Periodic jobs run in time order, by a real-time loop or by test-clock advances.

    Each job owns its transaction. Ties run in registration order, so the order in which the
    runtime registers jobs (checkpoint, then flush, then sweeps) is the order they observe.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.jobs: list[Job] = []
        self._lock = threading.RLock()
        self._advancing = False
        # The job running now and when it started (`time.monotonic()`), for `stuck`.
        self.running: tuple[str, float] | None = None

    def register(self, name: str, interval: timedelta, fn: JobFn) -> Job:
        if interval <= timedelta(0):
            raise ValueError("a job interval must be positive")
        with self._lock:
            job = Job(name=name, interval=interval, fn=fn, next_run=self.clock.now() + interval)
            self.jobs.append(job)
            return job

    def _next_due(self, until: datetime) -> Job | None:
        due: list[Job] = []
        for j in self.jobs:
            if j.idle_until is not None:
                if j.idle_until > until:
                    continue  # nothing to do within this window unless woken
                _align(j, j.idle_until)
            if j.next_run <= until:
                due.append(j)
        if not due:
            return None
        return min(due, key=lambda j: (j.next_run, self.jobs.index(j)))

    def stuck(self, limit_seconds: float) -> tuple[str, float] | None:
        """(job, seconds it has run) when the job running now has run for longer than
        `limit_seconds`: a worker waiting forever (on a lock, a hung connection) runs no
        other job, and only a restart frees it. None otherwise."""
        running = self.running
        if running is None:
            return None
        seconds = time.monotonic() - running[1]
        return (running[0], seconds) if seconds > limit_seconds else None

    def _run(self, job: Job, at: datetime) -> None:
        job.next_run = at + job.interval
        job.idle_until = None
        self.running = (job.name, time.monotonic())
        try:
            result = job.fn(at)
        except Exception:  # one failing job must not stop the others; it runs again next time
            log.exception("periodic job %s failed", job.name)
            job_failures_total.labels(job=job.name).inc()
            result = None
        finally:
            self.running = None
        job.runs += 1
        # Hints only steer test-clock advances: in real time a request can create work
        # without waking anyone, and running every job each interval costs nothing.
        if isinstance(result, Idle) and self._advancing:
            job.idle_until = result.until
        elif isinstance(result, int) and not isinstance(result, bool) and result > 0:
            self.wake_all(at)

    def wake_all(self, at: datetime | None = None) -> None:
        """Forget every idle hint: something changed that the jobs may need to see. A woken
        job runs at its first interval point at or after `at`."""
        for j in self.jobs:
            if j.idle_until is not None:
                j.idle_until = None
                if at is not None:
                    _align(j, at)

    def advance(self, clock: ManualClock, seconds: float) -> datetime:
        """Move a manual clock forward, running every job that falls due, in time order."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            target = clock.now() + timedelta(seconds=seconds)
            # Requests may have changed anything since the last advance.
            self.wake_all(clock.now())
            self._advancing = True
            try:
                while (job := self._next_due(target)) is not None:
                    at = job.next_run
                    if at > clock.now():
                        clock.set(at)
                    self._run(job, at)
            finally:
                self._advancing = False
                self.wake_all(target)
            clock.set(target)
            return target

    def run_pending(self) -> int:
        """Run the jobs due by the clock's current time (real-time mode). Returns runs made."""
        count = 0
        with self._lock:
            now = self.clock.now()
            while (job := self._next_due(now)) is not None:
                # In real time a late job runs once at `now`, not once per missed interval.
                self._run(job, now)
                count += 1
        return count

    def seconds_until_next(self) -> float:
        with self._lock:
            if not self.jobs:
                return 1.0
            nxt = min(j.next_run for j in self.jobs)
        return max(0.0, (nxt - self.clock.now()).total_seconds())

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_pending()
            stop.wait(min(1.0, self.seconds_until_next()) or 0.01)
