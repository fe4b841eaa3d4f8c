"""Periodic Polar work: scheduled plan changes falling due, and customers for new payers."""

from __future__ import annotations

import logging

from orzbob.kit.clock import FOREVER, Idle
from orzbob.polar.client import gateway_for
from orzbob.polar.customers import sync_missing_customers
from orzbob.polar.subscriptions import subscription_service
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)


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
