"""The Prometheus registry. Labels are low-cardinality only: never an org or instance id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

usage_meter_queue = Gauge(
    "orzbob_usage_meter_queue", "Usage records not yet sent to Polar", registry=REGISTRY
)
usage_meter_oldest_unsent_seconds = Gauge(
    "orzbob_usage_meter_oldest_unsent_seconds",
    "Age of the oldest usage record not yet sent to Polar",
    registry=REGISTRY,
)
usage_meter_sent_total = Counter(
    "orzbob_usage_meter_sent_total", "Usage records accepted by Polar", registry=REGISTRY
)
usage_meter_duplicates_total = Counter(
    "orzbob_usage_meter_duplicates_total",
    "Usage records Polar reported as already received",
    registry=REGISTRY,
)
usage_meter_failures_total = Counter(
    "orzbob_usage_meter_failures_total",
    "Failed flush attempts by reason",
    ["reason"],
    registry=REGISTRY,
)
usage_meter_dead_total = Counter(
    "orzbob_usage_meter_dead_total", "Usage records moved to dead-letter", registry=REGISTRY
)
flush_duration_seconds = Histogram(
    "orzbob_usage_flush_duration_seconds",
    "Duration of one flush batch sent to Polar",
    registry=REGISTRY,
)
usage_records_total = Counter(
    "orzbob_usage_records_total", "Usage records written", ["tier"], registry=REGISTRY
)
quota_exceeded_total = Counter(
    "orzbob_quota_exceeded_total",
    "Times an org exhausted its included allowance",
    ["plan"],
    registry=REGISTRY,
)
instances_paused_total = Counter(
    "orzbob_instances_paused_total", "Instances paused by reason", ["reason"], registry=REGISTRY
)
instances_stopped_total = Counter(
    "orzbob_instances_stopped_total", "Instances stopped by reason", ["reason"], registry=REGISTRY
)
idle_instances_reaped_total = Counter(
    "orzbob_idle_instances_reaped_total", "Instances paused for inactivity", registry=REGISTRY
)
daily_usage_hours = Gauge(
    "orzbob_daily_usage_hours", "Instance-hours run today (UTC) across all orgs", registry=REGISTRY
)
cap_sweep_duration_seconds = Histogram(
    "orzbob_cap_sweep_duration_seconds", "Duration of one cap sweep", registry=REGISTRY
)
cap_sweep_paused = Histogram(
    "orzbob_cap_sweep_paused_instances",
    "Instances paused by one cap sweep",
    buckets=(0, 1, 10, 100, 1000, 10000, 100000),
    registry=REGISTRY,
)
cap_sweep_errors_total = Counter(
    "orzbob_cap_sweep_errors_total", "Orgs a cap sweep failed to enforce", registry=REGISTRY
)
cap_sweep_last_success = Gauge(
    "orzbob_cap_sweep_last_success_timestamp_seconds",
    "When a cap sweep last completed (Unix time)",
    registry=REGISTRY,
)
alerts_sent_total = Counter(
    "orzbob_alerts_sent_total", "Budget alert e-mails accepted by SMTP", ["kind"], registry=REGISTRY
)
alerts_failed_total = Counter(
    "orzbob_alerts_failed_total",
    "Budget alerts given up on: refused for good (5xx) or undeliverable (no contact)",
    ["kind"],
    registry=REGISTRY,
)
alerts_retries_total = Counter(
    "orzbob_alerts_retries_total",
    "Budget alert deliveries put off for a retry (4xx replies, connection errors)",
    ["reason"],
    registry=REGISTRY,
)
alerts_unsent = Gauge(
    "orzbob_alerts_unsent", "Budget alerts raised and not yet delivered", registry=REGISTRY
)
alerts_oldest_unsent_seconds = Gauge(
    "orzbob_alerts_oldest_unsent_seconds",
    "Age of the oldest budget alert not yet delivered",
    registry=REGISTRY,
)
job_failures_total = Counter(
    "orzbob_job_failures_total", "Periodic job failures", ["job"], registry=REGISTRY
)
polar_webhooks_total = Counter(
    "orzbob_polar_webhooks_total",
    "Polar webhook deliveries by outcome (processed, ignored, failed, duplicate)",
    ["status"],
    registry=REGISTRY,
)
reconcile_drift_minutes = Gauge(
    "orzbob_reconcile_drift_minutes",
    "Minutes the ledger and Polar disagree on: the last daily run (open periods) and the "
    "period-close runs of the last 24 hours (closed periods)",
    ["scope"],
    registry=REGISTRY,
)
reconcile_runs_total = Counter(
    "orzbob_reconcile_runs_total", "Reconciliation runs by outcome", ["status"], registry=REGISTRY
)
reconcile_last_success = Gauge(
    "orzbob_reconcile_last_success_timestamp_seconds",
    "When a reconciliation run last completed (Unix time)",
    registry=REGISTRY,
)
usage_meter_dead = Gauge(
    "orzbob_usage_meter_dead_records",
    "Usage records in dead-letter now (read from the database at scrape time)",
    registry=REGISTRY,
)
http_requests_total = Counter(
    "orzbob_http_requests_total",
    "API requests by method, route template and status class (2xx, 4xx, 5xx)",
    ["method", "route", "status"],
    registry=REGISTRY,
)
http_request_duration_seconds = Histogram(
    "orzbob_http_request_duration_seconds",
    "API request duration by route template",
    ["route"],
    registry=REGISTRY,
)
