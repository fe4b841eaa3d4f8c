"""Polar routes: the signed webhook receiver and the self-service upgrade checkout."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from orzbob.accounts.repository import account_repository
from orzbob.api.deps import OrgAdminDep, RuntimeDep
from orzbob.kit.errors import Conflict, NotFound, OrzbobError, Unprocessable
from orzbob.polar.client import PolarRejected, PolarUnavailable, gateway_for
from orzbob.polar.customers import customer_service
from orzbob.polar.sync import PLAN_KEY
from orzbob.polar.webhooks import (
    WebhookResult,
    WebhooksNotConfigured,
    WebhookVerifier,
    webhook_service,
)
from orzbob.runtime import Runtime

router = APIRouter(tags=["billing"])


class PolarUnavailableError(OrzbobError):
    status_code = 503
    error = "polar_unavailable"


class PolarRefusedError(OrzbobError):
    status_code = 502
    error = "polar_error"


class WebhookAck(BaseModel):
    status: str
    detail: str | None = None


class CheckoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str


class CheckoutOut(BaseModel):
    plan: str
    checkout_id: str
    url: str
    expires_at: str | None = None


def _verifier(runtime: Runtime) -> WebhookVerifier:
    secret = runtime.settings.polar_webhook_secret
    value = secret.get_secret_value() if secret else ""
    if not value:
        raise WebhooksNotConfigured("POLAR_WEBHOOK_SECRET is not set on this service.")
    if runtime.webhook_verifier is None:
        runtime.webhook_verifier = WebhookVerifier(value)
    return runtime.webhook_verifier


@router.post(
    "/v1/webhooks/polar",
    response_model=WebhookAck,
    responses={202: {"model": WebhookAck, "description": "Recorded as failed, with the reason"}},
    tags=["webhooks"],
)
async def polar_webhook(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Polar webhook receiver (Standard Webhooks signature on the raw body)."""
    body = await request.body()
    webhook_id = _verifier(runtime).verify(body, request.headers)

    def process() -> WebhookResult:
        with runtime.session() as session:
            return webhook_service.handle(
                session,
                webhook_id=webhook_id,
                body=body,
                catalog=runtime.catalog,
                now=runtime.clock.now(),
            )

    result = await run_in_threadpool(process)
    ack = WebhookAck(status=result.status, detail=result.detail)
    return JSONResponse(ack.model_dump(), status_code=202 if result.status == "failed" else 200)


@router.post("/v1/billing/checkout", response_model=CheckoutOut, status_code=201)
def create_checkout(
    body: CheckoutCreate, principal: OrgAdminDep, runtime: RuntimeDep
) -> CheckoutOut:
    """Start a Polar checkout to move the caller's org to a paid public plan; the plan
    changes when Polar reports the subscription (webhook), not here."""
    assert principal.org_id is not None
    catalog = runtime.catalog
    if not catalog.has_plan(body.plan):
        raise Unprocessable(
            f"Unknown plan {body.plan!r}: choose one of {', '.join(catalog.plan_ids)}."
        )
    plan = catalog.plan(body.plan)
    if plan.visibility != "public":
        raise Unprocessable(f"The {plan.name} plan is arranged with our sales team, not online.")
    if body.plan == catalog.default_plan:
        raise Unprocessable(
            f"{plan.name} needs no checkout: cancel your subscription and the organization "
            "returns to it at the end of the period."
        )
    if not runtime.settings.billing_enabled:
        raise Conflict("Billing is not enabled on this service, so plans cannot be bought.")
    org_id: uuid.UUID = principal.org_id
    # Read and close before any Polar call: no transaction is held across the network.
    with runtime.session() as session:
        org = account_repository.get_org(session, org_id)
        if org is None:
            raise NotFound("Organization not found.")
        if org.plan_id == body.plan and org.polar_subscription_id:
            raise Conflict(
                f"The organization is already subscribed to {plan.name}; manage or resume "
                "the subscription in the Polar customer portal."
            )
    gateway = gateway_for(runtime)
    try:
        customer_service.ensure_customer(runtime.sessions, gateway, org_id)
        products = gateway.list_products(metadata={PLAN_KEY: body.plan})
        live = [p for p in products if not p.is_archived]  # oldest first, as sync picks
        if not live:
            raise PolarUnavailableError(
                f"The {plan.name} plan is not set up in Polar yet (run `orz polar sync`)."
            )
        checkout = gateway.create_checkout(
            products=[live[0].id],
            external_customer_id=str(org_id),
            success_url=runtime.settings.public_url.rstrip("/") + "/?checkout={CHECKOUT_ID}",
            metadata={"orzbob_org": str(org_id), PLAN_KEY: body.plan},
        )
    except PolarUnavailable as exc:
        raise PolarUnavailableError(
            f"Polar is unavailable ({exc.reason}); nothing was changed. Please retry shortly."
        ) from exc
    except PolarRejected as exc:
        raise PolarRefusedError(f"Polar refused the checkout: {exc}") from exc
    return CheckoutOut(
        plan=body.plan, checkout_id=checkout.id, url=checkout.url, expires_at=checkout.expires_at
    )
