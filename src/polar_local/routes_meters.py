"""`/v1/meters`: create, list, get, update (incl. archive) and quantities."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from .common import iso, metadata_matches, metadata_query, page_response, sort_items
from .context import Ctx, refuse_organization_id
from .errors import ValidationFailed, invalid, issue
from .filters import filter_matches, quantities
from .fixtures import new_meter
from .routes_events import identity_query
from .schemas import MeterCreate, MeterUpdate, check_unit

router = APIRouter(prefix="/v1/meters")


@router.post("/")
def create_meter(ctx: Ctx, body: MeterCreate) -> JSONResponse:
    refuse_organization_id(body.organization_id)
    fields = body.model_dump()
    fields["aggregation"] = body.aggregation.wire()
    meter = new_meter(ctx.org_id, ctx.now(), fields)
    ctx.store.put("meter", meter)
    return JSONResponse(meter, status_code=201)


@router.get("/")
def list_meters(
    ctx: Ctx,
    request: Request,
    organization_id: Annotated[list[UUID] | None, Query()] = None,
    query: str | None = None,
    is_archived: bool | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    meta = metadata_query(request.query_params.multi_items())
    items = [
        m
        for m in ctx.store.all("meter")
        if (is_archived is None or (m["archived_at"] is not None) == is_archived)
        and (not query or query.lower() in m["name"].lower())
        and (not organization_id or m["organization_id"] in {str(o) for o in organization_id})
        and metadata_matches(m["metadata"], meta)
    ]
    return JSONResponse(page_response(sort_items(items, sorting or ["name"]), page, limit))


@router.get("/{id}")
def get_meter(ctx: Ctx, id: UUID) -> JSONResponse:
    return JSONResponse(ctx.require("meter", id))


@router.patch("/{id}")
def update_meter(ctx: Ctx, id: UUID, body: MeterUpdate) -> JSONResponse:
    with ctx.store.lock:
        meter = ctx.require("meter", id)
        changes = body.model_dump(exclude_unset=True)
        archived = changes.pop("is_archived", None)
        if body.aggregation is not None:
            changes["aggregation"] = body.aggregation.wire()
        if body.filter is not None:
            changes["filter"] = body.filter.model_dump()
        for key, value in changes.items():
            if value is not None or key in ("custom_label", "custom_multiplier"):
                meter[key] = value
        try:
            check_unit(meter["unit"], meter["custom_label"], meter["custom_multiplier"])
        except ValueError as e:
            raise invalid(["body", "unit"], f"Value error, {e}", "value_error") from e
        if archived is not None:
            meter["archived_at"] = iso(ctx.now()) if archived else None
        meter["modified_at"] = iso(ctx.now())
        ctx.store.put("meter", meter)
    return JSONResponse(meter)


@router.get("/{id}/quantities")
def meter_quantities(
    ctx: Ctx,
    request: Request,
    id: UUID,
    start_timestamp: AwareDatetime,
    end_timestamp: AwareDatetime,
    interval: Literal["year", "month", "week", "day", "hour"],
    timezone: str = "UTC",
    customer_id: Annotated[list[UUID] | None, Query()] = None,
    external_customer_id: Annotated[list[str] | None, Query()] = None,
    customer_aggregation_function: Literal["count", "sum", "max", "min", "avg", "unique"]
    | None = None,
) -> JSONResponse:
    meter = ctx.require("meter", id)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise invalid(["query", "timezone"], "Invalid timezone.", "value_error", timezone) from e
    if end_timestamp < start_timestamp:
        msg = "end_timestamp must be after start_timestamp."
        raise invalid(["query", "end_timestamp"], msg, "value_error", str(end_timestamp))
    q = identity_query(
        ctx, [str(c) for c in customer_id] if customer_id else None, external_customer_id
    )
    q.ts_from, q.ts_to = start_timestamp.timestamp(), end_timestamp.timestamp()
    meta = metadata_query(request.query_params.multi_items())
    evs = [
        e
        for e in ctx.store.select_events(q, descending=False)
        if filter_matches(e, meter["filter"]) and metadata_matches(e["metadata"], meta)
    ]
    try:
        result = quantities(
            meter["aggregation"],
            evs,
            start=start_timestamp,
            end=end_timestamp,
            interval=interval,
            tz=timezone,
            customer_func=customer_aggregation_function,
        )
    except ValueError as e:
        raise ValidationFailed(
            [issue(["query", "interval"], str(e), "value_error", interval)]
        ) from e
    return JSONResponse(result)
