from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from orzbob.accounts.models import Org, Role
from orzbob.accounts.schemas import (
    ContactsIn,
    OrgCreate,
    OrgCreatedOut,
    OrgOut,
    OrgUpdate,
    PlanChange,
    TokenCreate,
    TokenOut,
)
from orzbob.accounts.service import Principal, account_service
from orzbob.api.deps import (
    EngineeringDep,
    NowDep,
    OrgAdminDep,
    OrgPrincipalDep,
    RuntimeDep,
    SessionDep,
    StaffDep,
    require_staff,
)
from orzbob.audit.service import audit_service
from orzbob.kit.money import from_cents

router = APIRouter(tags=["organizations"])

# Integer query parameters are bounded: an unbounded one overflows the database integer.
MAX_OFFSET = 1_000_000


def org_out(org: Org) -> OrgOut:
    return OrgOut(
        id=org.id,
        name=org.name,
        billing_emails=list(org.billing_emails),
        plan=org.plan_id,
        signup_at=org.signup_at,
        spend_limit=None if org.spend_limit_cents is None else from_cents(org.spend_limit_cents),
        created_at=org.created_at,
    )


@router.get("/v1/orgs/me", response_model=OrgOut)
def get_my_org(principal: OrgPrincipalDep, session: SessionDep) -> OrgOut:
    assert principal.org_id is not None
    return org_out(account_service.get_org(session, principal.org_id))


@router.patch("/v1/orgs/me", response_model=OrgOut)
def update_my_org(body: OrgUpdate, principal: OrgAdminDep, session: SessionDep) -> OrgOut:
    assert principal.org_id is not None
    org = account_service.get_org(session, principal.org_id)
    return org_out(
        account_service.update_org(session, org, name=body.name, billing_emails=body.billing_emails)
    )


@router.put("/v1/orgs/me/contacts", response_model=OrgOut)
def set_my_contacts(body: ContactsIn, principal: OrgAdminDep, session: SessionDep) -> OrgOut:
    """Replace the org's billing contacts (org admins): 1 to 20 valid addresses. Budget
    alerts and other billing e-mail go to all of them."""
    assert principal.org_id is not None
    org = account_service.get_org(session, principal.org_id, lock=True)
    return org_out(account_service.update_org(session, org, billing_emails=body.billing_emails))


@router.post("/v1/orgs/me/tokens", response_model=TokenOut, status_code=201)
def create_my_token(
    body: TokenCreate, principal: OrgAdminDep, session: SessionDep, now: NowDep
) -> TokenOut:
    token, raw = account_service.create_token(
        session, org_id=principal.org_id, role=body.role, name=body.name, now=now
    )
    return TokenOut(id=token.id, org_id=token.org_id, role=token.role, name=token.name, token=raw)


@router.get("/v1/admin/orgs", response_model=list[OrgOut], tags=["admin"])
def list_orgs(
    _: StaffDep,
    session: SessionDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[OrgOut]:
    return [org_out(o) for o in account_service.list_orgs(session, limit=limit, offset=offset)]


@router.post("/v1/admin/orgs", response_model=OrgCreatedOut, status_code=201, tags=["admin"])
def create_org(
    body: OrgCreate, _: EngineeringDep, runtime: RuntimeDep, session: SessionDep, now: NowDep
) -> OrgCreatedOut:
    """Create an org (engineering) and its first admin token, returned this once only, as
    `orz admin org create` does."""
    org = account_service.create_org(
        session,
        name=body.name,
        billing_emails=body.billing_emails,
        plan_id=body.plan,
        catalog=runtime.catalog,
        now=now,
    )
    token, raw = account_service.create_token(
        session, org_id=org.id, role=Role.ADMIN.value, name="first admin", now=now
    )
    return OrgCreatedOut(**org_out(org).model_dump(), token=raw, token_id=token.id)


@router.get("/v1/admin/orgs/{org_id}", response_model=OrgOut, tags=["admin"])
def get_org(org_id: uuid.UUID, _: StaffDep, session: SessionDep) -> OrgOut:
    return org_out(account_service.get_org(session, org_id))


@router.put("/v1/admin/orgs/{org_id}/plan", response_model=OrgOut, tags=["admin"])
def set_org_plan(
    org_id: uuid.UUID,
    body: PlanChange,
    principal: Annotated[Principal, Depends(require_staff(Role.SUPPORT_L2, Role.ENGINEERING))],
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> OrgOut:
    org = account_service.get_org(session, org_id, lock=True)
    before = org.plan_id
    account_service.set_plan(session, org, body.plan, catalog=runtime.catalog, at=now)
    # Plan changes move money (allowance and base), so staff-made ones are audited.
    audit_service.record(
        session,
        action="plan.change",
        actor=principal,
        org_id=org.id,
        now=now,
        details={"from": before, "to": org.plan_id},
    )
    return org_out(org)


@router.delete("/v1/admin/orgs/{org_id}", status_code=204, tags=["admin"])
def delete_org(
    org_id: uuid.UUID, _: EngineeringDep, runtime: RuntimeDep, session: SessionDep, now: NowDep
) -> None:
    """Delete the org; its instances stop (reason `admin`) and their usage closes with it."""
    account_service.delete_org(session, org_id, now=now, catalog=runtime.catalog)
