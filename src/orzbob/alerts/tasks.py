"""Periodic alert work: deliver what is due, and the catch-up evaluation (safety net)."""

from __future__ import annotations

import logging
from datetime import timedelta

from orzbob.accounts.service import account_service
from orzbob.alerts.evaluator import alert_evaluator
from orzbob.alerts.sender import AlertSender
from orzbob.alerts.service import alert_service
from orzbob.kit.clock import FOREVER, Idle
from orzbob.quota.allocation import org_period
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)
CATCHUP_PAGE = 500


def sender_for(runtime: Runtime) -> AlertSender:
    """The process's alert sender. With a stable `ORZBOB_WORKER_ID`, the claims a killed
    earlier run of this process left are taken back now rather than when their lease lapses."""
    if runtime.alert_sender is None:
        s = runtime.settings
        sender = AlertSender(
            sessions=runtime.sessions,
            settings=s,
            clock=runtime.clock,
            lease=timedelta(seconds=s.alert_lease_seconds),
        )
        if s.worker_id:
            sender.worker_id = s.worker_id
            sender.reclaim_own()
        runtime.alert_sender = sender
    return runtime.alert_sender


def send_alerts(runtime: Runtime) -> int | Idle:
    """Deliver raised alerts that are due (new ones, and retries whose backoff ran out)."""
    report = sender_for(runtime).run()
    if report.stopped:
        log.warning("alert delivery paused: %s", report.stopped)
    with runtime.session() as session:
        nxt = alert_service.next_attempt(session)
    # New alerts come with new usage or a request, and either wakes the jobs.
    return Idle(FOREVER if nxt is None else max(nxt, runtime.clock.now()))


def evaluate_alerts(runtime: Runtime) -> int | Idle:
    """Raise any threshold that usage written elsewhere did not (e.g. a base fee above a
    spend limit at a period start, with no usage to trigger the check). Page by page, each
    in its own transaction."""
    now = runtime.clock.now()
    raised, offset = 0, 0
    # Without new usage or requests (which wake every job) only a new period changes what
    # is due, so a quiet test-clock month runs this once per period, not every interval.
    wake = FOREVER
    while True:
        with runtime.session() as session:
            orgs = account_service.list_orgs(session, limit=CATCHUP_PAGE, offset=offset)
            raised += alert_evaluator.evaluate(
                session, orgs, catalog=runtime.catalog, now=now, lock=True
            )
            wake = min([wake, *(org_period(o, now).end for o in orgs)])
        if len(orgs) < CATCHUP_PAGE:
            break
        offset += CATCHUP_PAGE
    if raised:
        log.warning("alert catch-up raised %d alert(s) the usage path had not", raised)
        return raised
    return Idle(wake)
