"""`orz worker` serves its own /metrics (ORZBOB_METRICS_PORT): the counters only workers move
(flushes, sweeps, alerts, jobs) can be scraped."""

from __future__ import annotations

import httpx

from orzbob.kit import metrics
from orzbob.worker import serve_metrics


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
