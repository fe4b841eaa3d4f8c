"""`/v1/subscriptions`: list, get, update (cancel, uncancel, revoke, product), revoke, create."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from .common import JSON, metadata_matches, metadata_query, page_response, sort_items
from .context import Ctx, ServerContext
from .errors import ValidationFailed, invalid, issue, pydantic_issues
from .fixtures import ACTIVE_STATUSES, render_subscription
from .routes_customers import resolve_customer
from .schemas import Metadata, SubscriptionCreate
from .subscriptions import SubscriptionOps, SubscriptionStatus

router = APIRouter(prefix="/v1/subscriptions")

Status = SubscriptionStatus | Literal["paused"]
Reason = Literal[
    "customer_service",
    "low_quality",
    "missing_features",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
    "other",
]
_reason = TypeAdapter(Reason | None)
_metadata = TypeAdapter(Metadata)
_UNSUPPORTED_UPDATES = (
    "seats",
    "units",
    "recurring_interval",
    "pause_at_period_end",
    "resume",
    "trial_end",
    "pending_update",
)


@router.get("/")
def list_subscriptions(
    ctx: Ctx,
    request: Request,
    organization_id: Annotated[list[UUID] | None, Query()] = None,
    product_id: Annotated[list[UUID] | None, Query()] = None,
    customer_id: Annotated[list[UUID] | None, Query()] = None,
    external_customer_id: Annotated[list[str] | None, Query()] = None,
    discount_id: Annotated[list[UUID] | None, Query()] = None,
    active: bool | None = None,
    status: Annotated[list[Status] | None, Query()] = None,
    cancel_at_period_end: bool | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    meta = metadata_query(request.query_params.multi_items())
    customers = None
    if customer_id is not None or external_customer_id is not None:
        customers = {str(c) for c in customer_id or []}
        wanted_ext = set(external_customer_id or [])
        customers |= {c["id"] for c in ctx.live_customers() if c["external_id"] in wanted_ext}
    products = {str(p) for p in product_id} if product_id else None

    def wanted(s: JSON) -> bool:
        return (
            (customers is None or s["customer_id"] in customers)
            and (products is None or s["product_id"] in products)
            and (not organization_id or ctx.org_id in {str(o) for o in organization_id})
            and not discount_id
            # Polar's `active=false` means revoked (past_due, canceled or unpaid).
            and (
                active is None
                or (
                    s["status"] in ACTIVE_STATUSES
                    if active
                    else s["status"] in ("past_due", "canceled", "unpaid")
                )
            )
            and (not status or s["status"] in status)
            and (cancel_at_period_end is None or s["cancel_at_period_end"] == cancel_at_period_end)
            and metadata_matches(s["metadata"], meta)
        )

    items = [s for s in ctx.store.all("subscription") if wanted(s)]
    body = page_response(sort_items(items, sorting or ["-started_at"]), page, limit)
    body["items"] = [render_subscription(ctx.store, s) for s in body["items"]]
    return JSONResponse(body)


@router.get("/{id}")
def get_subscription(ctx: Ctx, id: UUID) -> JSONResponse:
    return JSONResponse(render_subscription(ctx.store, ctx.require("subscription", id)))


def _reason_and_comment(body: JSON) -> tuple[str | None, str | None]:
    try:
        reason = _reason.validate_python(body.get("customer_cancellation_reason"))
    except ValidationError as e:
        loc = ("body", "customer_cancellation_reason")
        raise ValidationFailed(pydantic_issues(e.errors(include_url=False), loc)) from e
    comment = body.get("customer_cancellation_comment")
    if comment is not None and not isinstance(comment, str):
        raise invalid(
            ["body", "customer_cancellation_comment"],
            "Input should be a valid string",
            "string_type",
            comment,
        )
    return reason, comment


def apply_update(ctx: ServerContext, sub_id: str, body: Any) -> JSON:
    if not isinstance(body, dict):
        raise invalid(["body"], "Input should be a valid dictionary", "dict_type", body)
    ops = SubscriptionOps(ctx)
    if "revoke" in body:
        if body["revoke"] is not True:
            raise invalid(
                ["body", "revoke"], "Input should be True", "literal_error", body["revoke"]
            )
        reason, comment = _reason_and_comment(body)
        return ops.revoke(sub_id, reason=reason, comment=comment)
    if "cancel_at_period_end" in body:
        flag = body["cancel_at_period_end"]
        if not isinstance(flag, bool):
            raise invalid(
                ["body", "cancel_at_period_end"],
                "Input should be a valid boolean",
                "bool_type",
                flag,
            )
        reason, comment = _reason_and_comment(body)
        if flag:
            return ops.cancel(sub_id, reason=reason, comment=comment)
        return ops.uncancel(sub_id)
    unsupported = [k for k in _UNSUPPORTED_UPDATES if k in body]
    if unsupported:
        msg = "This update is not supported by the local Polar server."
        raise invalid(["body", unsupported[0]], msg, "value_error", body[unsupported[0]])
    if "discount_id" in body:
        discount_id = body["discount_id"]
        if discount_id is not None and ctx.store.get("discount", str(discount_id)) is None:
            msg = "Discount does not exist."
            raise invalid(["body", "discount_id"], msg, "value_error", discount_id)

        def apply_discount(core: JSON) -> None:
            core["discount_id"] = None if discount_id is None else str(discount_id)

        return ops.change(sub_id, apply_discount)
    if body.get("product_id") is not None:
        product = ctx.store.get("product", str(body["product_id"]))
        if product is None or product["is_archived"] or not product["is_recurring"]:
            msg = "Product does not exist."
            raise invalid(["body", "product_id"], msg, "value_error", body["product_id"])
        return ops.switch_product(sub_id, product)
    if "metadata" in body:
        try:
            metadata = _metadata.validate_python(body["metadata"])
        except ValidationError as e:
            issues = pydantic_issues(e.errors(include_url=False), ("body", "metadata"))
            raise ValidationFailed(issues) from e
        return ops.change(sub_id, lambda core: core.update(metadata=metadata))
    return ctx.require("subscription", sub_id)


@router.patch("/{id}")
def update_subscription(ctx: Ctx, id: UUID, body: Annotated[Any, Body()]) -> JSONResponse:
    core = apply_update(ctx, str(id), body)
    return JSONResponse(render_subscription(ctx.store, core))


@router.delete("/{id}")
def revoke_subscription(ctx: Ctx, id: UUID) -> JSONResponse:
    # Unlike other deletes, Polar answers 200 with the revoked subscription.
    core = SubscriptionOps(ctx).revoke(str(id))
    return JSONResponse(render_subscription(ctx.store, core))


@router.post("/")
def create_subscription(ctx: Ctx, body: SubscriptionCreate) -> JSONResponse:
    """Programmatic creation, for free recurring products only (paid ones need checkout)."""
    customer = resolve_customer(ctx, body.customer_id, body.external_customer_id, required=True)
    assert customer is not None
    product = ctx.store.get("product", str(body.product_id))
    loc = ["body", "product_id"]
    if product is None or product["is_archived"]:
        raise invalid(loc, "Product does not exist.", "value_error", str(body.product_id))
    if not product["is_recurring"]:
        raise invalid(loc, "Product is not recurring.", "value_error", str(body.product_id))
    prices = [p for p in product["prices"] if not p["is_archived"]]
    if any(
        p["amount_type"] != "metered_unit"
        and not (p["amount_type"] == "fixed" and p["price_amount"] == 0)
        for p in prices
    ):
        msg = "Product is not free. Paid products must go through a checkout."
        raise ValidationFailed([issue(loc, msg, "value_error", str(body.product_id))])
    core = SubscriptionOps(ctx).create(customer, product, metadata=body.metadata)
    return JSONResponse(render_subscription(ctx.store, core), status_code=201)
