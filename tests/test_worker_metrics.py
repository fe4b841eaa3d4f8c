"""`orz worker` serves its own /metrics (ORZBOB_METRICS_PORT): the counters only workers move
(flushes, sweeps, alerts, jobs) can be scraped."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx

from orzbob.kit import metrics
from orzbob.kit.clock import ManualClock, Scheduler
from orzbob.worker import serve_metrics
from tests.conftest import T0


def test_the_worker_serves_the_registry_on_its_metrics_port() -> None:
    metrics.cap_sweep_errors_total.inc(0)
    port = serve_metrics(0, host="127.0.0.1")
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for name in (
        "orzbob_cap_sweep_duration_seconds",
        "orzbob_usage_meter_sent_total",
        "orzbob_job_failures_total",
    ):
        assert name in body


def test_the_worker_reports_a_job_stuck_past_its_limit_on_healthz() -> None:
    """The liveness probe's `/healthz` beside `/metrics`: 200 while the jobs run and finish,
    503 naming the job once one has run for longer than the limit (a lock waited for
    forever, a hung connection), so the orchestrator restarts the worker; 200 again once it
    returns."""
    scheduler = Scheduler(ManualClock(T0))
    release, entered = threading.Event(), threading.Event()

    def hangs(at: object) -> None:
        entered.set()
        release.wait(30)

    scheduler.register("metering.checkpoint", timedelta(seconds=60), lambda at: 0)
    scheduler.register("throttle.sweep", timedelta(seconds=60), hangs)
    port = serve_metrics(0, host="127.0.0.1", scheduler=scheduler, stuck_seconds=0.2)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    runner = threading.Thread(target=scheduler.advance, args=(scheduler.clock, 60))
    runner.start()
    try:
        assert entered.wait(10)
        time.sleep(0.4)
        r = httpx.get(f"{base}/healthz", timeout=10)
        assert r.status_code == 503
        assert "throttle.sweep" in r.text and "has run for" in r.text
        assert "orzbob_job_failures_total" in httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        release.set()
        runner.join(10)
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
