"""Reading alerts (the API, the billing object's `last_alert`) and resending one (staff)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from orzbob.accounts.service import Principal, account_service
from orzbob.alerts.evaluator import message_id
from orzbob.alerts.models import AlertState, BudgetAlert
from orzbob.alerts.repository import alert_repository
from orzbob.alerts.schemas import AlertOut, LastAlertOut
from orzbob.audit.service import audit_service
from orzbob.kit.errors import Conflict, NotFound
from orzbob.quota.allocation import org_period

RESENDABLE = (AlertState.SENT, AlertState.FAILED, AlertState.UNDELIVERABLE)


def alert_out(a: BudgetAlert) -> AlertOut:
    return AlertOut(
        id=a.id,
        kind=a.kind,
        threshold=a.threshold,
        state=a.state,
        period_start=a.period_start,
        period_end=a.period_end,
        created_at=a.created_at,
        sent_at=a.sent_at,
        subject=a.subject,
        recipients=list(a.recipients or []),
        attempts=a.attempts,
        next_attempt_at=a.next_attempt_at if a.state == AlertState.PENDING else None,
        last_error=a.last_error,
        smtp_reply=a.smtp_reply,
        covered_by=a.covered_by_id,
        message_id=a.message_id,
        rearmed_at=a.rearmed_at,
    )


class AlertService:
    def current_period(
        self, session: Session, org_id: uuid.UUID, *, now: datetime
    ) -> tuple[datetime, Sequence[BudgetAlert]]:
        """This period's alerts of the org, newest first."""
        org = account_service.get_org(session, org_id)
        start = org_period(org, now).start
        return start, alert_repository.list_for_org(session, org.id, period_start=start, limit=100)

    def history(self, session: Session, org_id: uuid.UUID, *, limit: int) -> Sequence[BudgetAlert]:
        account_service.get_org(session, org_id)
        return alert_repository.list_for_org(session, org_id, period_start=None, limit=limit)

    def last_alert(
        self, session: Session, org_id: uuid.UUID, period_start: datetime
    ) -> LastAlertOut | None:
        """`last_alert` of the billing object: the period's latest alert still in force."""
        a = alert_repository.last_for_period(session, org_id, period_start)
        if a is None:
            return None
        return LastAlertOut(
            kind=a.kind,
            threshold=a.threshold,
            state=a.state,
            created_at=a.created_at,
            sent_at=a.sent_at,
            subject=a.subject,
        )

    def resend(
        self, session: Session, alert_id: uuid.UUID, *, actor: Principal, now: datetime
    ) -> BudgetAlert:
        """Queue a delivered, failed or undeliverable alert again (after contacts were fixed,
        or when a customer lost the e-mail). It goes out as a new message that names the
        original, so mail clients do not fold it away as a duplicate."""
        alert = alert_repository.get(session, alert_id, lock=True)
        if alert is None:
            raise NotFound("Alert not found.")
        if alert.state not in RESENDABLE:
            hint = {
                AlertState.PENDING: "it is still waiting to be sent",
                AlertState.COVERED: "it was covered by a higher alert; resend that one",
                AlertState.REARMED: "it was re-armed and is no longer in force",
            }.get(AlertState(alert.state), "")
            raise Conflict(f"Cannot resend alert {alert.id}: {hint} (state {alert.state}).")
        before = alert.state
        resends = int(alert.facts.get("resends", 0)) + 1
        alert.facts = {**alert.facts, "resends": resends, "resend_of": alert.message_id}
        alert.message_id = message_id(alert.id, alert.generation, resends)
        alert.state = AlertState.PENDING.value
        alert.next_attempt_at = now
        alert.attempts = 0
        alert.claimed_by = alert.claim_expires_at = None
        alert.last_error = alert.smtp_reply = None
        session.flush()
        audit_service.record(
            session,
            action="alert.resend",
            actor=actor,
            org_id=alert.org_id,
            now=now,
            details={"alert_id": str(alert.id), "state": before, "threshold": alert.threshold},
        )
        return alert

    def next_attempt(self, session: Session) -> datetime | None:
        """When the next pending alert is due to be sent (None: none is pending)."""
        return alert_repository.next_attempt(session)


alert_service = AlertService()
