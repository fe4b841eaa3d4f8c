"""The flusher's lease outlives its own retries, and a restarted flusher takes its claims back
at once (over real HTTP against the local Polar-compatible server)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from orzbob.metering.models import RecordState, UsageRecord
from orzbob.runtime import Runtime
from tests.metering.polar_support import (
    billing_settings,
    control,
    flusher_for,
    local_polar,
    make_records,
    server_stats,
)


def pending(runtime: Runtime) -> int:
    with runtime.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.state == RecordState.PENDING.value)
            )
            or 0
        )


def test_a_lease_outlives_retries_so_no_other_flusher_resends_the_batch(
    runtime: Runtime, tmp_path: Path
) -> None:
    org_id, _ = make_records(runtime, 50)
    lease = timedelta(seconds=0.6)
    with local_polar(tmp_path) as url, control(url) as c:
        settings = billing_settings(runtime.settings, url)
        # Polar answers 429 Retry-After: 1 twice: the retries outlast the lease three times.
        c.post(
            "/faults",
            json={"kind": "status", "status": 429, "retry_after": 1, "count": 2,
                  "path_prefix": "/v1/events/ingest"},
        )  # fmt: skip
        slow = flusher_for(runtime, settings, lease=lease, sleep=time.sleep, worker_id="slow")
        other = flusher_for(runtime, settings, lease=lease, worker_id="other")
        reports = []
        thread = threading.Thread(target=lambda: reports.append(slow.flush()))
        thread.start()
        time.sleep(1.5)  # the first lease would have lapsed twice by now
        second = other.flush()
        thread.join(30)
        stats = server_stats(url, org_id)
    assert second.batches == 0 and second.sent == 0
    assert reports[0].sent == 50 and reports[0].retries == 2
    assert stats["count"] == 50 and stats["duplicates"] == 0
    assert pending(runtime) == 0


def test_a_restarted_flusher_ships_its_crashed_claims_at_once(
    runtime: Runtime, tmp_path: Path
) -> None:
    org_id, _ = make_records(runtime, 40)
    with local_polar(tmp_path) as url:
        settings = billing_settings(runtime.settings, url)
        crashed = flusher_for(runtime, settings, worker_id="worker-1", batch_size=40)
        assert len(crashed._claim()) == 40  # claimed, then the process dies
        others = flusher_for(runtime, settings, worker_id="worker-2")
        assert others.flush().sent == 0  # the claims are someone else's for a lease
        restarted = flusher_for(runtime, settings, worker_id="worker-1")
        assert restarted.reclaim_own() == 40
        assert restarted.flush().sent == 40
        stats = server_stats(url, org_id)
    assert stats["count"] == 40 and pending(runtime) == 0
