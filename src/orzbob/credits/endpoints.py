from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from orzbob.accounts.models import Role
from orzbob.accounts.service import Principal
from orzbob.api.deps import NowDep, SessionDep, StaffDep, require_staff
from orzbob.audit.service import audit_service
from orzbob.credits.models import CreditGrant
from orzbob.credits.schemas import AuditEntryOut, AuditPage, CreditGrantIn, CreditOut
from orzbob.credits.service import credit_service
from orzbob.kit.money import from_cents

router = APIRouter(prefix="/v1/admin", tags=["admin", "credits"])
SeniorStaffDep = Annotated[Principal, Depends(require_staff(Role.SUPPORT_L2, Role.ENGINEERING))]


def credit_out(g: CreditGrant) -> CreditOut:
    return CreditOut(
        id=g.id,
        org_id=g.org_id,
        amount=str(from_cents(g.amount_cents)),
        reason=g.reason,
        granted_by_role=g.granted_by_role,
        period_start=g.period_start,
        period_end=g.period_end,
        created_at=g.created_at,
        polar_state=g.polar_state,
        polar_error=g.polar_error,
        polar_reference=g.polar_reference,
    )


@router.post("/orgs/{org_id}/credits", response_model=CreditOut, status_code=201)
def grant_credit(
    org_id: uuid.UUID,
    body: CreditGrantIn,
    principal: StaffDep,
    session: SessionDep,
    now: NowDep,
    response: Response,
    idempotency_key: str | None = Header(
        None, max_length=200, description="Retries with the same key return the first grant."
    ),
) -> CreditOut:
    """Grant a credit: support_l1 up to $50.00, support_l2 up to $500.00, engineering any
    amount. It reduces this period's estimate and is recorded in the audit log."""
    grant, created = credit_service.grant(
        session,
        org_id,
        amount=body.amount,
        reason=body.reason,
        actor=principal,
        now=now,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.status_code = 200
    return credit_out(grant)


@router.get("/orgs/{org_id}/credits", response_model=list[CreditOut])
def list_credits(org_id: uuid.UUID, _: StaffDep, session: SessionDep) -> list[CreditOut]:
    """Every credit granted to the org, newest first, with its Polar delivery state."""
    return [credit_out(g) for g in credit_service.list_grants(session, org_id)]


@router.post(
    "/credits/{credit_id}/polar-retry",
    response_model=CreditOut,
)
def retry_polar(
    credit_id: uuid.UUID, principal: SeniorStaffDep, session: SessionDep, now: NowDep
) -> CreditOut:
    """Queue a credit whose Polar delivery failed for another attempt (support_l2 or
    engineering), after fixing what Polar refused."""
    return credit_out(credit_service.requeue_polar(session, credit_id, actor=principal, now=now))


@router.get("/audit", response_model=AuditPage)
def list_audit(
    _: StaffDep,
    session: SessionDep,
    org: uuid.UUID | None = Query(None, description="Only entries about this organization."),
    action: str | None = Query(None, max_length=64, description="e.g. credit.grant"),
    before: uuid.UUID | None = Query(None, description="Entries older than this entry id."),
    limit: int = Query(100, ge=1, le=1000),
) -> AuditPage:
    """The append-only audit log, newest first. There is no way to change or remove an entry."""
    entries = audit_service.entries(session, org_id=org, action=action, before=before, limit=limit)
    return AuditPage(
        entries=[AuditEntryOut.model_validate(e) for e in entries],
        next_before=entries[-1].id if len(entries) == limit else None,
    )
