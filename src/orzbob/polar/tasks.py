"""Periodic Polar work: scheduled plan changes falling due, and customers for new payers."""

from __future__ import annotations

import logging
from datetime import timedelta

from orzbob.kit import metrics
from orzbob.kit.clock import FOREVER, Idle
from orzbob.polar.client import gateway_for
from orzbob.polar.orchestration.customers import sync_missing_customers
from orzbob.polar.reconcile_service import (
    EventReader,
    PeriodSpec,
    reconcile_service,
    run_reconcile,
)
from orzbob.polar.subscriptions import subscription_service
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)

CURRENT, PREVIOUS = PeriodSpec("current"), PeriodSpec("previous")


def apply_scheduled_plan_changes(runtime: Runtime) -> int | Idle:
    """Return orgs whose subscription was canceled or ended to the default plan once the
    period passes, by the service clock (so the test clock rehearses it too)."""
    now = runtime.clock.now()
    with runtime.session() as session:
        due = subscription_service.due_org_ids(session, now=now)
    applied = 0
    for org_id in due:
        # One org per transaction (docs/architecture.md): the change records the org's usage
        # up to it, locking that org's segments and periods only. Safe with several workers:
        # each re-checks the change under the org row lock.
        try:
            with runtime.session() as session:
                applied += subscription_service.apply_due_for(
                    session, org_id, catalog=runtime.catalog, now=now
                )
        except Exception:
            log.exception("scheduled plan change for org %s failed; retried next run", org_id)
    if applied:
        return applied  # a plan changed: other jobs may now see something new
    with runtime.session() as session:
        nxt = subscription_service.next_due(session)
    return Idle(nxt if nxt is not None else FOREVER)


def create_missing_customers(runtime: Runtime) -> int | Idle:
    """Make orgs that recorded usage Polar customers (external id = org id), so their usage
    and subscriptions meet one customer. Only registered when billing is enabled."""
    created, failed = sync_missing_customers(runtime.sessions, gateway_for(runtime))
    if not (created or failed):
        return Idle(FOREVER)  # new usage (which wakes every job) is what brings new work
    log.info("Polar customers: %d created, %d failed", created, failed)
    return 0  # customer ids change nothing other jobs read


# A closed period is reconciled once the flusher has had time to ship its last minutes.
RECONCILE_GRACE = timedelta(minutes=15)
RECONCILE_LOOKBACK = timedelta(days=7)


def _reader(runtime: Runtime) -> EventReader:
    # A job must not hold the scheduler for minutes: one short retry, then the run is kept
    # as failed and the next run tries again (an operator has `orz polar reconcile`).
    return EventReader(gateway_for(runtime), max_attempts=2, base_delay=0.2, max_delay=2.0)


def reconcile_open_periods(runtime: Runtime) -> int:
    """The daily run over every org's open period; sets the open-period drift gauge."""
    now = runtime.clock.now()
    with runtime.session() as session:
        windows = reconcile_service.windows(session, CURRENT, org_id=None, now=now)
    run = run_reconcile(
        runtime.sessions,
        gateway_for(runtime),
        runtime.catalog,
        windows=windows,
        period_label=CURRENT.label,
        scope="daily",
        org_id=None,
        now=now,
        reader=_reader(runtime),
    )
    if run.status == "ok":
        metrics.reconcile_drift_minutes.labels(scope="open_period").set(run.drift_minutes)
    else:
        log.warning("daily reconciliation failed: %s", run.error)
    return 0  # reconciliation changes nothing other jobs read


def reconcile_closed_periods(runtime: Runtime) -> int | Idle:
    """Each org's period, once, right after it closes; sets the closed-period drift gauge."""
    now = runtime.clock.now()
    with runtime.session() as session:
        due, next_due = reconcile_service.closed_periods_due(
            session, now=now, grace=RECONCILE_GRACE, lookback=RECONCILE_LOOKBACK
        )
    for window in due:
        run = run_reconcile(
            runtime.sessions,
            gateway_for(runtime),
            runtime.catalog,
            windows=[window],
            period_label=PREVIOUS.label,
            scope="period_close",
            org_id=window.org_id,
            now=now,
            reader=_reader(runtime),
        )
        if run.status != "ok":
            log.warning("reconciliation of a closed period failed: %s", run.error)
        elif run.drift_minutes:
            log.warning(
                "closed period of org %s differs from Polar by %d minute(s); see "
                "GET /v1/admin/reconcile/latest",
                window.org_id,
                run.drift_minutes,
            )
    with runtime.session() as session:
        metrics.reconcile_drift_minutes.labels(scope="closed_period").set(
            reconcile_service.closed_drift(session, now=now)
        )
    if due:
        return 0
    return Idle(next_due if next_due is not None else FOREVER)
