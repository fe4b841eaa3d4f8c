"""`/v1/customers` (by Polar id and by external id), customer sessions and checkouts."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from .common import JSON, iso, metadata_matches, metadata_query, page_response, sort_items
from .context import Ctx, ServerContext, refuse_organization_id
from .errors import NotFound, ValidationFailed, invalid, issue
from .fixtures import (
    ACTIVE_STATUSES,
    new_checkout,
    new_customer,
    new_customer_session,
    render_product,
)
from .schemas import (
    CheckoutCreate,
    CustomerCreate,
    CustomerSessionCreate,
    CustomerUpdate,
    CustomerUpdateExternal,
)
from .subscriptions import SubscriptionOps

router = APIRouter(prefix="/v1")

EMAIL_TAKEN = "A customer with this email address already exists."
EXTERNAL_ID_TAKEN = "A customer with this external ID already exists."


def _duplicates(
    ctx: ServerContext, email: str | None, external_id: str | None, exclude: str | None = None
) -> list[JSON]:
    issues = []
    others = [c for c in ctx.live_customers() if c["id"] != exclude]
    if email and any((c["email"] or "").lower() == email.lower() for c in others):
        issues.append(issue(["body", "email"], EMAIL_TAKEN, "value_error", email))
    if external_id and any(c["external_id"] == external_id for c in others):
        issues.append(issue(["body", "external_id"], EXTERNAL_ID_TAKEN, "value_error", external_id))
    return issues


@router.post("/customers/")
def create_customer(ctx: Ctx, body: CustomerCreate) -> JSONResponse:
    refuse_organization_id(body.organization_id)
    fields = body.model_dump()
    fields["external_id"] = fields["external_id"] or None
    if body.type == "individual" and not body.email:
        raise invalid(["body", "email"], "Field required", "missing")
    if body.type == "team" and not body.email and body.owner:
        fields["email"] = body.owner.get("email")
    with ctx.store.lock:
        issues = _duplicates(ctx, fields["email"], fields["external_id"])
        if issues:
            raise ValidationFailed(issues)
        customer = new_customer(ctx.org_id, ctx.now(), fields)
        ctx.store.put("customer", customer)
    return JSONResponse(customer, status_code=201)


@router.get("/customers/")
def list_customers(
    ctx: Ctx,
    request: Request,
    organization_id: Annotated[list[UUID] | None, Query()] = None,
    email: str | None = None,
    query: str | None = None,
    active: bool | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    meta = metadata_query(request.query_params.multi_items())
    active_ids = {
        s["customer_id"]
        for s in ctx.store.all("subscription")
        if s["status"] in (*ACTIVE_STATUSES, "past_due")
    }
    orgs = {str(o) for o in organization_id} if organization_id else None

    def wanted(c: JSON) -> bool:
        text = " ".join(str(c.get(k) or "") for k in ("name", "email", "external_id")).lower()
        return (
            (orgs is None or c["organization_id"] in orgs)
            and (email is None or (c["email"] or "").lower() == email.lower())
            and (not query or query.lower() in text)
            and (active is None or (c["id"] in active_ids) == active)
            and metadata_matches(c["metadata"], meta)
        )

    items = [c for c in ctx.live_customers() if wanted(c)]
    return JSONResponse(page_response(sort_items(items, sorting or ["-created_at"]), page, limit))


def _by_external(ctx: ServerContext, external_id: str) -> JSON:
    customer = ctx.customer_by_external(external_id)
    if customer is None:
        raise NotFound()
    return customer


def _update(
    ctx: ServerContext, customer: JSON, body: CustomerUpdate | CustomerUpdateExternal
) -> JSON:
    changes = body.model_dump(exclude_unset=True)
    if "external_id" in changes:
        new_ext = changes["external_id"] or None
        if customer["external_id"] and new_ext != customer["external_id"]:
            msg = "Customer external ID cannot be updated."
            raise invalid(["body", "external_id"], msg, "value_error", new_ext)
        changes["external_id"] = new_ext
    issues = _duplicates(ctx, changes.get("email"), changes.get("external_id"), customer["id"])
    if issues:
        raise ValidationFailed(issues)
    for key, value in changes.items():
        if key == "tax_id":
            customer["tax_id"] = [value, None] if value else None
        elif key in ("email", "metadata", "type") and value is None:
            continue
        else:
            customer[key] = value
    if "name" in changes:
        customer["billing_name"] = changes["name"]
    customer["modified_at"] = iso(ctx.now())
    ctx.store.put("customer", customer)
    return customer


def _delete(ctx: ServerContext, customer: JSON) -> Response:
    # Polar cancels the customer's subscriptions and frees the external id on delete.
    SubscriptionOps(ctx).revoke_all_for_customer(customer["id"])
    with ctx.store.lock:
        customer.update(deleted_at=iso(ctx.now()), external_id=None, modified_at=iso(ctx.now()))
        ctx.store.put("customer", customer)
    return Response(status_code=204)


@router.get("/customers/external/{external_id}")
def get_customer_external(ctx: Ctx, external_id: str) -> JSONResponse:
    return JSONResponse(_by_external(ctx, external_id))


@router.patch("/customers/external/{external_id}")
def update_customer_external(
    ctx: Ctx, external_id: str, body: CustomerUpdateExternal
) -> JSONResponse:
    with ctx.store.lock:
        return JSONResponse(_update(ctx, _by_external(ctx, external_id), body))


@router.delete("/customers/external/{external_id}")
def delete_customer_external(ctx: Ctx, external_id: str, anonymize: bool = False) -> Response:
    return _delete(ctx, _by_external(ctx, external_id))


@router.get("/customers/{id}")
def get_customer(ctx: Ctx, id: UUID) -> JSONResponse:
    return JSONResponse(ctx.require("customer", id))


@router.patch("/customers/{id}")
def update_customer(ctx: Ctx, id: UUID, body: CustomerUpdate) -> JSONResponse:
    with ctx.store.lock:
        return JSONResponse(_update(ctx, ctx.require("customer", id), body))


@router.delete("/customers/{id}")
def delete_customer(ctx: Ctx, id: UUID, anonymize: bool = False) -> Response:
    return _delete(ctx, ctx.require("customer", id))


def resolve_customer(
    ctx: ServerContext, customer_id: Any, external_customer_id: str | None, *, required: bool
) -> JSON | None:
    """Find the customer a body names by `customer_id` or `external_customer_id` (422 if
    named but unknown, or if `required` and not named)."""
    if customer_id is not None:
        found = ctx.store.get("customer", str(customer_id))
        if found is None or found["deleted_at"] is not None:
            msg = "Customer does not exist."
            raise invalid(["body", "customer_id"], msg, "value_error", str(customer_id))
        return found
    if external_customer_id is not None:
        found = ctx.customer_by_external(external_customer_id)
        if found is None and required:
            msg = "Customer does not exist."
            raise invalid(
                ["body", "external_customer_id"], msg, "value_error", external_customer_id
            )
        return found
    if required:
        raise invalid(["body", "customer_id"], "Field required", "missing")
    return None


@router.post("/customer-sessions/")
def create_customer_session(
    ctx: Ctx, request: Request, body: CustomerSessionCreate
) -> JSONResponse:
    customer = resolve_customer(ctx, body.customer_id, body.external_customer_id, required=True)
    assert customer is not None
    base = str(request.base_url).rstrip("/")
    session = new_customer_session(base, ctx.now(), customer, body.return_url)
    ctx.store.put("customer_session", session)
    return JSONResponse(session, status_code=201)


@router.post("/checkouts/")
def create_checkout(ctx: Ctx, request: Request, body: CheckoutCreate) -> JSONResponse:
    refuse_organization_id(body.organization_id)
    products = []
    for i, pid in enumerate(body.products):
        product = ctx.store.get("product", str(pid))
        if product is None or product["is_archived"]:
            msg = "Product does not exist."
            raise invalid(["body", "products", i], msg, "value_error", str(pid))
        products.append(render_product(ctx.store, product))
    customer = resolve_customer(ctx, body.customer_id, body.external_customer_id, required=False)
    base = str(request.base_url).rstrip("/")
    fields = body.model_dump()
    checkout = new_checkout(base, ctx.org_id, ctx.now(), products, fields, customer)
    ctx.store.put("checkout", checkout)
    return JSONResponse(checkout, status_code=201)
