from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from orzbob.alerts.schemas import AlertList, AlertOut
from orzbob.alerts.service import alert_out, alert_service
from orzbob.api.deps import NowDep, OrgPrincipalDep, SessionDep, StaffDep

router = APIRouter(tags=["billing"])


@router.get("/v1/billing/alerts", response_model=AlertList)
def list_my_alerts(principal: OrgPrincipalDep, session: SessionDep, now: NowDep) -> AlertList:
    """This period's budget alerts (50/90/100 % of the allowance, 80/100 % of the spend
    limit), newest first, with their delivery state and times."""
    assert principal.org_id is not None
    start, alerts = alert_service.current_period(session, principal.org_id, now=now)
    return AlertList(period_start=start, alerts=[alert_out(a) for a in alerts])


@router.get("/v1/admin/orgs/{org_id}/alerts", response_model=AlertList, tags=["admin"])
def list_org_alerts(
    org_id: uuid.UUID,
    _: StaffDep,
    session: SessionDep,
    now: NowDep,
    all_periods: bool = Query(False, alias="all", description="Every period, not only this one."),
    limit: int = Query(100, ge=1, le=1000),
) -> AlertList:
    """An org's budget alerts, for support: this period's, or every period's with `all=true`."""
    if all_periods:
        return AlertList(
            period_start=None,
            alerts=[alert_out(a) for a in alert_service.history(session, org_id, limit=limit)],
        )
    start, alerts = alert_service.current_period(session, org_id, now=now)
    return AlertList(period_start=start, alerts=[alert_out(a) for a in alerts])


@router.post("/v1/admin/alerts/{alert_id}/resend", response_model=AlertOut, tags=["admin"])
def resend_alert(
    alert_id: uuid.UUID, principal: StaffDep, session: SessionDep, now: NowDep
) -> AlertOut:
    """Queue a sent, failed or undeliverable alert for delivery again (audited)."""
    return alert_out(alert_service.resend(session, alert_id, actor=principal, now=now))
