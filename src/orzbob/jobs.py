"""Every periodic job, registered in the order they must observe each other.

Every job is correct when several workers run it at once on one PostgreSQL database:

| job | what keeps it correct with several workers |
|---|---|
| metering.checkpoint | `SKIP LOCKED` on open segments; all segments, then periods, in key order |
| instances.heartbeat_timeout | one instance per transaction, re-checked under `SKIP LOCKED` |
| throttle.sweep | one org per transaction, its instances re-checked under their locks |
| polar.plan_changes | one org per transaction, re-checked under the org row lock |
| metering.flush (+ full batches) | `SKIP LOCKED` claims, short leases renewed in flight |
| polar.customers | runs alone: PostgreSQL advisory lock |
| credits.polar | runs alone: PostgreSQL advisory lock |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from orzbob.alerts.tasks import evaluate_alerts, send_alerts, sender_for
from orzbob.hooks import install_hooks
from orzbob.instances.tasks import stop_silent_instances
from orzbob.kit.db import advisory_lock, session_scope
from orzbob.metering.flusher import Flusher
from orzbob.metering.service import metering_service
from orzbob.metering.tasks import checkpoint_open_segments, flush_full_batches, flush_usage
from orzbob.polar.client import PolarGateway
from orzbob.polar.orchestration.credits import ship_credits_to_polar
from orzbob.polar.tasks import (
    apply_scheduled_plan_changes,
    create_missing_customers,
    reconcile_closed_periods,
    reconcile_open_periods,
)
from orzbob.runtime import Runtime
from orzbob.throttle.tasks import sweep_caps

log = logging.getLogger(__name__)

# The shutdown flush ships at most this many batches; each is one Polar call bounded by
# POLAR_TIMEOUT_SECONDS (deploy/worker.yaml sizes the grace period from both).
FINAL_FLUSH_MAX_BATCHES = 10


def register_jobs(runtime: Runtime) -> None:
    """Register the periodic jobs of every domain on the runtime's scheduler.

    Order matters when several fall due at the same instant: usage is checkpointed before it
    is flushed and before caps and alerts look at it.
    """
    install_hooks()
    s = runtime.settings
    install_hooks()
    runtime.every("metering.checkpoint", s.flush_interval_seconds, checkpoint_open_segments)
    runtime.every("instances.heartbeat_timeout", s.sweep_interval_seconds, stop_silent_instances)
    # After the checkpoint, so the rollups it reads are fresh; a cap cuts usage at its own
    # moment whenever the sweep runs.
    runtime.every("throttle.sweep", s.sweep_interval_seconds, sweep_caps)
    # After the checkpoint: minutes up to a period end are recorded under the plan that ends.
    runtime.every("polar.plan_changes", s.sweep_interval_seconds, apply_scheduled_plan_changes)
    # Alerts are raised with the usage that crosses them; the catch-up is the safety net.
    runtime.every("alerts.catchup", s.alerts_catchup_interval_seconds, evaluate_alerts)
    runtime.every("alerts.send", s.alerts_send_interval_seconds, send_alerts)
    sender_for(runtime)  # now: a restarted worker takes back the alerts it held at once
    if s.billing_enabled:
        flusher = build_flusher(runtime)
        runtime.flusher = flusher
        runtime.every("metering.flush", s.flush_interval_seconds, flush_usage)
        if not s.test_clock:
            runtime.every("metering.flush_full_batches", 1, flush_full_batches)
        # Both talk to Polar per org with several calls that must not interleave: one at a time.
        runtime.every(
            "polar.customers",
            s.flush_interval_seconds,
            alone("polar.customers", create_missing_customers),
        )
        runtime.every(
            "credits.polar", s.sweep_interval_seconds, alone("credits.polar", ship_credits_to_polar)
        )
        # After the flush, so what was shipped is found at Polar; one worker at a time.
        runtime.every(
            "polar.reconcile_closed",
            3600,
            alone("polar.reconcile_closed", reconcile_closed_periods),
        )
        runtime.every(
            "polar.reconcile_daily", 86400, alone("polar.reconcile_daily", reconcile_open_periods)
        )
        runtime.shutdown_hooks.append(lambda: final_flush(flusher))
    else:
        log.warning("BILLING_ENABLED=false: usage records stay local (pending), nothing is sent")


def alone(name: str, fn: Callable[[Runtime], object]) -> Callable[[Runtime], object]:
    """Run `fn` only where no other process is running it (a PostgreSQL advisory lock held
    for the run); elsewhere the run is skipped and the next interval tries again."""

    def run(runtime: Runtime) -> object:
        with advisory_lock(runtime.engine, f"orzbob.job.{name}") as mine:
            if not mine:
                log.debug("job %s is running in another process; skipped", name)
                return 0
            return fn(runtime)

    return run


def build_flusher(runtime: Runtime) -> Flusher:
    """The process's flusher. With a stable `ORZBOB_WORKER_ID`, the claims a crashed earlier
    run of this process left are taken back now rather than when their lease lapses."""
    s = runtime.settings
    flusher = Flusher(
        sessions=runtime.sessions,
        gateway=PolarGateway(s),
        batch_size=s.flush_batch_size,
        lease=timedelta(seconds=s.flush_lease_seconds),
    )
    if s.worker_id:
        flusher.worker_id = s.worker_id
        flusher.reclaim_own()
    return flusher


def final_flush(flusher: Flusher) -> None:
    """On shutdown, ship what is pending (a few batches at most; the rest waits safely)."""
    report = flusher.flush(max_batches=FINAL_FLUSH_MAX_BATCHES)
    log.info(
        "final flush: %d sent, %d left for the next start", report.sent, flusher_pending(flusher)
    )


def flusher_pending(flusher: Flusher) -> int:
    with session_scope(flusher.sessions) as session:
        return metering_service.pending_count(session)
