"""`/v1/products`: create, list, get, update (prices by reference or new shape, archive)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from .common import (
    JSON,
    iso,
    metadata_matches,
    metadata_query,
    new_id,
    page_response,
    sort_items,
)
from .context import Ctx, refuse_organization_id
from .errors import invalid
from .fixtures import render_product
from .prices import build_prices
from .schemas import ProductCreate, ProductUpdate

router = APIRouter(prefix="/v1/products")


@router.post("/")
def create_product(ctx: Ctx, body: ProductCreate) -> JSONResponse:
    refuse_organization_id(body.organization_id)
    now = ctx.now()
    product_id = new_id()
    recurring = body.recurring_interval is not None
    if body.meter_interval is not None and not recurring:
        raise invalid(["body", "meter_interval"], "Only recurring products can meter.")
    prices = build_prices(
        ctx.store, body.prices, product_id=product_id, existing=[], recurring=recurring, now=now
    )
    product: JSON = {
        "id": product_id,
        "created_at": iso(now),
        "modified_at": None,
        "trial_interval": body.trial_interval,
        "trial_interval_count": body.trial_interval_count,
        "name": body.name,
        "description": body.description,
        "visibility": body.visibility,
        "recurring_interval": body.recurring_interval,
        "recurring_interval_count": (body.recurring_interval_count or 1) if recurring else None,
        "meter_interval": body.meter_interval,
        "meter_interval_count": (body.meter_interval_count or 1) if body.meter_interval else None,
        "is_recurring": recurring,
        "is_archived": False,
        "organization_id": ctx.org_id,
        "metadata": body.metadata,
        "is_deletable": True,
        "prices": prices,
        "benefits": [],
        "medias": [],
        "attached_custom_fields": [],
    }
    ctx.store.put("product", product)
    return JSONResponse(render_product(ctx.store, product), status_code=201)


@router.get("/")
def list_products(
    ctx: Ctx,
    request: Request,
    id: Annotated[list[UUID] | None, Query()] = None,
    organization_id: Annotated[list[UUID] | None, Query()] = None,
    query: str | None = None,
    is_archived: bool | None = None,
    is_recurring: bool | None = None,
    benefit_id: Annotated[list[UUID] | None, Query()] = None,
    visibility: Annotated[list[Literal["draft", "private", "public"]] | None, Query()] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    meta = metadata_query(request.query_params.multi_items())
    ids = {str(i) for i in id} if id else None
    orgs = {str(o) for o in organization_id} if organization_id else None
    items = [
        p
        for p in ctx.store.all("product")
        if (ids is None or p["id"] in ids)
        and (orgs is None or p["organization_id"] in orgs)
        and (not query or query.lower() in p["name"].lower())
        and (is_archived is None or p["is_archived"] == is_archived)
        and (is_recurring is None or p["is_recurring"] == is_recurring)
        and (not visibility or p["visibility"] in visibility)
        # No benefits are ever attached here, so a benefit filter matches nothing.
        and not benefit_id
        and metadata_matches(p["metadata"], meta)
    ]
    body = page_response(sort_items(items, sorting or ["-created_at"]), page, limit)
    body["items"] = [render_product(ctx.store, p) for p in body["items"]]
    return JSONResponse(body)


@router.get("/{id}")
def get_product(ctx: Ctx, id: UUID) -> JSONResponse:
    return JSONResponse(render_product(ctx.store, ctx.require("product", id)))


@router.patch("/{id}")
def update_product(ctx: Ctx, id: UUID, body: ProductUpdate) -> JSONResponse:
    with ctx.store.lock:
        product = ctx.require("product", id)
        now = ctx.now()
        changes = body.model_dump(exclude_unset=True)
        if "prices" in changes and body.prices is not None:
            product["prices"] = build_prices(
                ctx.store,
                body.prices,
                product_id=product["id"],
                existing=product["prices"],
                recurring=product["is_recurring"],
                now=now,
            )
        if body.recurring_interval is not None:
            if not product["is_recurring"]:
                msg = "A one-time product can't become recurring."
                raise invalid(["body", "recurring_interval"], msg)
            product["recurring_interval"] = body.recurring_interval
        for key in ("name", "visibility", "recurring_interval_count", "metadata"):
            if changes.get(key) is not None:
                product[key] = changes[key]
        for key in ("description", "trial_interval", "trial_interval_count"):
            if key in changes:
                product[key] = changes[key]
        if body.is_archived is not None:
            product["is_archived"] = body.is_archived
        product["modified_at"] = iso(now)
        ctx.store.put("product", product)
    return JSONResponse(render_product(ctx.store, product))
