"""Helpers for alert tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from orzbob.alerts.local_sink import Received, SinkServer
from orzbob.alerts.models import BudgetAlert
from orzbob.alerts.sender import SendReport
from orzbob.alerts.tasks import sender_for
from orzbob.runtime import Runtime

PERIOD_START = datetime(2026, 3, 10, tzinfo=UTC)  # orgs made at T0 (2026-03-10 12:00)


def mails(smtp: SinkServer) -> list[Received]:
    return smtp.handler.received()


def subjects(smtp: SinkServer) -> list[str]:
    return [str(m.message["Subject"]) for m in mails(smtp)]


def send(runtime: Runtime) -> SendReport:
    return sender_for(runtime).run()


def alerts(runtime: Runtime, org_id: uuid.UUID) -> dict[tuple[str, int], BudgetAlert]:
    with runtime.session() as s:
        rows = s.scalars(select(BudgetAlert).where(BudgetAlert.org_id == org_id)).all()
        return {(a.kind, a.threshold): a for a in rows}


def states(runtime: Runtime, org_id: uuid.UUID) -> dict[tuple[str, int], str]:
    return {k: a.state for k, a in alerts(runtime, org_id).items()}
