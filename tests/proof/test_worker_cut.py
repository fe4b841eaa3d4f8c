"""`orz worker` under the test clock outlives a database connection cut: the crash proof
found it exiting on the first statement after pg_terminate_backend."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError

from orzbob import worker as worker_module
from orzbob.runtime import Runtime


def test_a_dropped_connection_while_following_the_clock_is_survived(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    calls: list[int] = []

    def follow(_: Runtime) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        stop.set()
        return True

    monkeypatch.setattr(worker_module.testclock_control, "follow", follow)
    monkeypatch.setattr(worker_module, "RETRY_SECONDS", 0.01, raising=False)
    worker_module.run_worker(runtime, stop)
    assert len(calls) == 2
