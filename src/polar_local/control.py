"""`/_control`: inspection, reset, fault injection, webhooks and direct subscription setup.

No authentication: this API exists only on the local server. Shapes are documented in the
package docstring (`polar_local`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from .common import JSON, iso
from .context import Ctx, ServerContext
from .errors import NotFound, invalid
from .fixtures import new_customer, render_subscription
from .routes_events import identity_query
from .schemas import Metadata
from .store import EventQuery
from .subscriptions import SubscriptionOps, SubscriptionStatus, apply_status
from .webhooks import SUBSCRIPTION_EVENT_TYPES

router = APIRouter(prefix="/_control", tags=["control"])


class FaultSpec(BaseModel):
    kind: Literal["latency", "status", "drop"]
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: int | None = Field(default=None, ge=0)
    latency_ms: int = Field(default=0, ge=0, le=120_000)
    path_prefix: str = "/v1/"
    method: str | None = None
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FaultSpec:
        if self.kind == "status" and self.status is None:
            raise ValueError("kind 'status' needs a status code")
        if self.kind == "latency" and self.latency_ms <= 0:
            raise ValueError("kind 'latency' needs latency_ms > 0")
        if self.count is not None and self.rate is not None:
            raise ValueError("give either count or rate, not both")
        return self


class WebhookSettings(BaseModel):
    url: str | None = None
    secret: str | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=50)
    retry_base_seconds: float | None = Field(default=None, ge=0)
    retry_max_seconds: float | None = Field(default=None, ge=0)


class WebhookSend(BaseModel):
    type: str
    subscription_id: UUID


class ControlSubscription(BaseModel):
    product_id: UUID
    customer_id: UUID | None = None
    external_customer_id: str | None = None
    customer_email: str | None = None
    status: SubscriptionStatus = "active"
    current_period_start: AwareDatetime | None = None
    current_period_end: AwareDatetime | None = None
    cancel_at_period_end: bool = False
    metadata: Metadata = Field(default_factory=dict)


class ControlSubscriptionPatch(BaseModel):
    status: SubscriptionStatus | None = None
    current_period_start: AwareDatetime | None = None
    current_period_end: AwareDatetime | None = None
    cancel_at_period_end: bool | None = None
    metadata: Metadata | None = None


@router.get("/health")
def health(ctx: Ctx) -> JSON:
    return {"ok": True, "organization_id": ctx.org_id}


@router.get("/stats")
def stats(ctx: Ctx) -> JSON:
    store = ctx.store
    return {
        "events": store.count_events(EventQuery()),
        "duplicates": store.counter("duplicates"),
        "ingest_requests": store.counter("ingest_requests"),
        **{f"{k}s": store.count(k) for k in ("customer", "meter", "product", "subscription")},
        "webhooks_pending": ctx.webhooks.pending(),
    }


def _event_query(
    ctx: ServerContext,
    customer_id: str | None,
    external_customer_id: str | None,
    name: str | None,
) -> EventQuery:
    q = identity_query(
        ctx,
        [customer_id] if customer_id else None,
        [external_customer_id] if external_customer_id else None,
    )
    q.names = [name] if name else None
    return q


@router.get("/events")
def list_events(
    ctx: Ctx,
    external_customer_id: str | None = None,
    customer_id: str | None = None,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSON:
    q = _event_query(ctx, customer_id, external_customer_id, name)
    items = ctx.store.select_events(q, descending=False, limit=limit, offset=offset)
    return {"items": items, "total": ctx.store.count_events(q)}


@router.get("/events/stats")
def event_stats(
    ctx: Ctx,
    external_customer_id: str | None = None,
    customer_id: str | None = None,
    name: str | None = None,
    sum: Annotated[list[str] | None, Query()] = None,
) -> JSON:
    q = _event_query(ctx, customer_id, external_customer_id, name)
    return {
        "count": ctx.store.count_events(q),
        "duplicates": ctx.store.counter("duplicates"),
        "sums": {key: ctx.store.sum_event_metadata(key, q) for key in sum or []},
    }


@router.delete("/events/{external_id}")
def delete_event(ctx: Ctx, external_id: str) -> JSON:
    """Lose one event on the Polar side, as if Polar had dropped it (reconciliation tests)."""
    if not ctx.store.delete_event(external_id):
        raise NotFound()
    return {"deleted": external_id}


class EventMetadataPatch(BaseModel):
    metadata: dict[str, str | int | float | bool]


@router.patch("/events/{external_id}")
def patch_event(ctx: Ctx, external_id: str, body: EventMetadataPatch) -> JSON:
    """Alter one event's metadata on the Polar side (merged key by key)."""
    row = ctx.store.patch_event_metadata(external_id, body.metadata)
    if row is None:
        raise NotFound()
    return {"external_id": external_id, "metadata": row["metadata"]}


@router.post("/reset")
def reset(ctx: Ctx) -> JSON:
    ctx.faults.clear()
    ctx.webhooks.clear()
    ctx.store.reset()
    return {"ok": True}


@router.get("/requests")
def requests(
    ctx: Ctx, path_prefix: str = "", limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> JSON:
    return {"items": ctx.store.requests(path_prefix, limit)}


@router.get("/faults")
def list_faults(ctx: Ctx) -> JSON:
    return {"items": ctx.faults.rules()}


@router.post("/faults", status_code=201)
def add_fault(ctx: Ctx, spec: FaultSpec) -> JSON:
    return ctx.faults.add(**spec.model_dump()).describe()


@router.delete("/faults")
def clear_faults(ctx: Ctx) -> JSON:
    count = len(ctx.faults.rules())
    ctx.faults.clear()
    return {"cleared": count}


@router.delete("/faults/{rule_id}")
def remove_fault(ctx: Ctx, rule_id: int) -> Response:
    if not ctx.faults.remove(rule_id):
        raise NotFound()
    return Response(status_code=204)


@router.get("/webhooks")
def webhook_settings(ctx: Ctx) -> JSON:
    return ctx.webhooks.settings()


@router.put("/webhooks")
def configure_webhooks(ctx: Ctx, body: WebhookSettings) -> JSON:
    try:
        ctx.webhooks.configure(**body.model_dump(exclude_unset=True))
    except ValueError as e:
        raise invalid(["body", "secret"], str(e)) from e
    return ctx.webhooks.settings()


@router.get("/webhooks/deliveries")
def webhook_deliveries(
    ctx: Ctx,
    webhook_id: str | None = None,
    type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> JSON:
    items = ctx.store.webhook_deliveries(webhook_id=webhook_id, type_=type, limit=limit)
    for item in items:
        item["payload"] = json.loads(item["payload"])
    return {"items": items}


@router.post("/webhooks/send", status_code=202)
def send_webhook(ctx: Ctx, body: WebhookSend) -> JSON:
    if body.type not in SUBSCRIPTION_EVENT_TYPES:
        allowed = ", ".join(sorted(SUBSCRIPTION_EVENT_TYPES))
        raise invalid(["body", "type"], f"Unsupported event type; use one of: {allowed}")
    core = ctx.require("subscription", body.subscription_id)
    return {"webhook_id": ctx.emit_subscription([body.type], core)[0]}


def _customer_for(
    ctx: ServerContext, customer_id: Any, external_id: str | None, email: str | None
) -> JSON:
    if customer_id is not None:
        return ctx.require("customer", customer_id)
    if external_id is None:
        raise invalid(["body", "external_customer_id"], "Field required", "missing")
    with ctx.store.lock:
        customer = ctx.customer_by_external(external_id)
        if customer is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", external_id).strip("-.") or "customer"
            fields = {"external_id": external_id, "email": email or f"{slug}@local-polar.test"}
            customer = new_customer(ctx.org_id, ctx.now(), fields)
            ctx.store.put("customer", customer)
    return customer


@router.post("/subscriptions", status_code=201)
def create_subscription(ctx: Ctx, body: ControlSubscription) -> JSON:
    """Stand-in for a completed checkout: any recurring product, any status and period."""
    product = ctx.require("product", body.product_id)
    if not product["is_recurring"]:
        raise invalid(["body", "product_id"], "Product is not recurring.")
    customer = _customer_for(ctx, body.customer_id, body.external_customer_id, body.customer_email)
    core = SubscriptionOps(ctx).create(
        customer,
        product,
        status=body.status,
        period_start=body.current_period_start,
        period_end=body.current_period_end,
        metadata=body.metadata,
        cancel_at_period_end=body.cancel_at_period_end,
    )
    return render_subscription(ctx.store, core)


@router.patch("/subscriptions/{sub_id}")
def patch_subscription(ctx: Ctx, sub_id: UUID, body: ControlSubscriptionPatch) -> JSON:
    now = ctx.now()

    def mutate(core: JSON) -> None:
        for key in ("current_period_start", "current_period_end"):
            value = getattr(body, key)
            if value is not None:
                core[key] = iso(value)
                if core[key.replace("period", "meter_period")] is not None:
                    core[key.replace("period", "meter_period")] = iso(value)
        if body.metadata is not None:
            core["metadata"] = body.metadata
        if body.cancel_at_period_end is True and not core["cancel_at_period_end"]:
            core.update(
                cancel_at_period_end=True, canceled_at=iso(now), ends_at=core["current_period_end"]
            )
        elif body.cancel_at_period_end is False and core["cancel_at_period_end"]:
            core.update(cancel_at_period_end=False, canceled_at=None, ends_at=None)
        if body.status is not None:
            apply_status(core, body.status, now)

    return render_subscription(ctx.store, SubscriptionOps(ctx).change(str(sub_id), mutate))


@router.post("/subscriptions/{sub_id}/cycle")
def cycle_subscription(ctx: Ctx, sub_id: UUID) -> JSON:
    return render_subscription(ctx.store, SubscriptionOps(ctx).cycle(str(sub_id)))


@router.post("/discounts/{discount_id}/redeem")
def redeem_discount(ctx: Ctx, discount_id: UUID) -> JSON:
    """An invoice used the discount: count one redemption (refused once it is used up)."""
    discount = dict(ctx.require("discount", discount_id))
    limit = discount.get("max_redemptions")
    if limit is not None and discount["redemptions_count"] >= limit:
        raise invalid(["path", "discount_id"], "The discount has no redemptions left.")
    discount["redemptions_count"] += 1
    ctx.store.put("discount", discount)
    return discount


@router.post("/checkouts/{checkout_id}/complete", status_code=201)
def complete_checkout(ctx: Ctx, checkout_id: UUID) -> JSONResponse:
    """Pretend the customer paid: create the subscription and mark the checkout succeeded."""
    checkout = ctx.require("checkout", checkout_id)
    if checkout["status"] != "open":
        raise invalid(["path", "checkout_id"], "Checkout is not open.")
    product = ctx.require("product", checkout["product_id"])
    if not product["is_recurring"]:
        raise invalid(["path", "checkout_id"], "Only recurring products are supported.")
    customer = _customer_for(
        ctx, checkout["customer_id"], checkout["external_customer_id"], checkout["customer_email"]
    )
    core = SubscriptionOps(ctx).create(
        customer, product, metadata=checkout["metadata"], checkout_id=checkout["id"]
    )
    checkout.update(
        status="succeeded",
        subscription_id=core["id"],
        customer_id=customer["id"],
        modified_at=iso(ctx.now()),
    )
    ctx.store.put("checkout", checkout)
    return JSONResponse(render_subscription(ctx.store, core), status_code=201)
