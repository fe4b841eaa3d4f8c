"""Jobs that must run alone skip their run while another process runs them."""

from __future__ import annotations

import pytest

from orzbob.jobs import alone
from orzbob.kit.db import advisory_lock
from orzbob.runtime import Runtime


def test_a_job_that_runs_alone_skips_while_another_process_runs_it(
    runtime: Runtime, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("advisory locks are PostgreSQL's; SQLite runs jobs in one process")
    runs: list[int] = []
    job = alone("credits.polar", lambda _rt: runs.append(1) or 1)
    with advisory_lock(runtime.engine, "orzbob.job.credits.polar") as held:
        assert held
        assert job(runtime) == 0 and runs == []
    assert job(runtime) == 1 and runs == [1]
