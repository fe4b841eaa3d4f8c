"""Polar routes: the signed webhook receiver and the self-service upgrade checkout."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from orzbob.api.deps import OrgAdminDep, RuntimeDep
from orzbob.api.middleware import request_id_of
from orzbob.api.openapi import errors
from orzbob.kit.errors import Conflict, Unprocessable
from orzbob.polar.client import PolarRejected, PolarUnavailable
from orzbob.polar.orchestration.checkout import (
    PolarRefusedError,
    PolarUnavailableError,
    start_checkout,
)
from orzbob.polar.webhooks import (
    PayloadRejected,
    WebhookResult,
    WebhooksNotConfigured,
    WebhookVerifier,
    webhook_service,
)
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["billing"])

WEBHOOK_PATH = "/v1/webhooks/polar"


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


def _signature_header(name: str, description: str) -> dict[str, object]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


# The receiver reads the raw bytes (the signature covers them exactly), so FastAPI cannot
# infer the body or the headers: they are described here for the published document.
WEBHOOK_OPENAPI = {
    "x-raw-body": True,  # read by the route itself: no 422 from FastAPI's validation
    "requestBody": {
        "required": True,
        "description": "A Polar event, signed per Standard Webhooks over these exact bytes.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["type", "data"],
                    "properties": {
                        "type": {"type": "string", "example": "subscription.active"},
                        "data": {"type": "object"},
                    },
                }
            }
        },
    },
    "parameters": [
        _signature_header("webhook-id", "The delivery id, stable across Polar's retries."),
        _signature_header("webhook-timestamp", "Unix seconds; refused outside ±5 minutes."),
        _signature_header("webhook-signature", "`v1,<base64 HMAC-SHA256>`, space-separated."),
    ],
}


@router.post(
    WEBHOOK_PATH,
    response_model=WebhookAck,
    responses={
        202: {"model": WebhookAck, "description": "Recorded as failed, with the reason"},
        **errors(400, 401, 413, 503),
    },
    openapi_extra=WEBHOOK_OPENAPI,
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
    if result.status == "rejected":  # recorded and committed; now refused
        raise PayloadRejected(result.detail or "The webhook body cannot be read.")
    ack = WebhookAck(status=result.status, detail=result.detail)
    return JSONResponse(ack.model_dump(), status_code=202 if result.status == "failed" else 200)


@router.post(
    "/v1/billing/checkout",
    response_model=CheckoutOut,
    status_code=201,
    responses=errors(404, 409, 422, 502, 503),
)
def create_checkout(
    request: Request, body: CheckoutCreate, principal: OrgAdminDep, runtime: RuntimeDep
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
    try:
        checkout = start_checkout(runtime, org_id, plan)
    except PolarUnavailable as exc:
        raise PolarUnavailableError(
            f"Polar is unavailable ({exc.reason}); nothing was changed. Please retry shortly."
        ) from exc
    except PolarRejected as exc:
        # Polar's answer is for the on-call engineer (it may name internal ids); the customer
        # gets what happened, what to do, and the id that finds this log line.
        request_id = request_id_of(request.scope) or "unknown"
        log.error(
            "Polar refused the checkout of org %s for plan %s (HTTP %s, request id %s): %s",
            org_id,
            body.plan,
            exc.status,
            request_id,
            exc,
        )
        raise PolarRefusedError(
            "Our payment provider could not start the checkout; nothing was charged and your "
            "plan is unchanged. Please try again later, or contact support and quote request "
            f"id {request_id}."
        ) from exc
    return CheckoutOut(
        plan=body.plan, checkout_id=checkout.id, url=checkout.url, expires_at=checkout.expires_at
    )
