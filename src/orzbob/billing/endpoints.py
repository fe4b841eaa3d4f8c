from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from orzbob.api.deps import (
    BEARER,
    NowDep,
    OrgAdminDep,
    RuntimeDep,
    SessionDep,
    StaffDep,
    caller_of,
    in_statement_or_transaction,
    json_response,
    now_of,
    runtime_of,
)
from orzbob.billing.schemas import BillingOut, SpendLimitIn
from orzbob.billing.service import billing_service
from orzbob.kit.db import Reader, StatementConnection, session_scope
from orzbob.quota.service import quota_service

router = APIRouter(tags=["billing"])


@router.get("/v1/billing", response_model=BillingOut, openapi_extra=BEARER)
async def get_billing(request: Request) -> Response:
    """This period's usage, allowance, estimated bill, credits, forecast and throttles."""
    caller, runtime = caller_of(request), runtime_of(request)
    now = await now_of(runtime)

    def read(session: Session, db: Reader | None = None) -> BillingOut:
        if caller.cached is not None:
            caller.org_admitted(caller.cached)  # refused before any query, as it was known
        principal, org, runs = billing_service.head(db or session, caller.raw, caller.cached)
        caller.org_admitted(principal)
        return billing_service.read_head(
            session, org, runs, catalog=runtime.catalog, now=now, db=db
        )

    def quick(conn: StatementConnection) -> BillingOut:
        # The head and the snapshot on the statement connection; the session connects only
        # for what few orgs need beyond them.
        with session_scope(runtime.read_sessions) as session:
            return read(session, conn)

    return json_response(await in_statement_or_transaction(runtime, quick, read, read_only=True))


@router.put("/v1/billing/spend-limit", response_model=BillingOut)
def set_spend_limit(
    body: SpendLimitIn,
    principal: OrgAdminDep,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> BillingOut:
    """Set the org's spend limit (`{"amount": "50.00"}`) or remove it (`{"amount": null}`).
    Org admins only; when the estimated bill reaches it, instances pause (`spend_limit`)."""
    assert principal.org_id is not None
    org = quota_service.set_spend_limit(
        session, principal.org_id, body.amount, actor=principal, now=now, catalog=runtime.catalog
    )
    return billing_service.read(session, org, catalog=runtime.catalog, now=now)


@router.get("/v1/admin/orgs/{org_id}/billing", response_model=BillingOut, tags=["admin"])
def get_org_billing(
    org_id: uuid.UUID, _: StaffDep, runtime: RuntimeDep, session: SessionDep, now: NowDep
) -> BillingOut:
    """The staff view of an org's billing object (the same fields the customer sees)."""
    return billing_service.read_of(session, org_id, catalog=runtime.catalog, now=now)
