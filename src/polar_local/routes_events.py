"""`/v1/events`: ingest (all-or-nothing validation, dedupe on external_id) and reads."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from .common import (
    JSON,
    as_list,
    clamp_limit,
    iso,
    metadata_matches,
    metadata_query,
    new_ids,
    page_response,
)
from .context import Ctx, ServerContext
from .errors import (
    NotFound,
    ValidationFailed,
    invalid,
    issue,
    organization_token_issue,
    pydantic_issues,
)
from .filters import filter_matches
from .fixtures import customer_index, render_event
from .schemas import EventCreateCustomer, EventCreateExternalCustomer, FilterIn
from .store import EventQuery

router = APIRouter(prefix="/v1/events")

_customer_event = TypeAdapter(EventCreateCustomer)
_external_event = TypeAdapter(EventCreateExternalCustomer)
_filter = TypeAdapter(FilterIn)
UUIDs = Annotated[list[UUID] | None, Query()]
Strings = Annotated[list[str] | None, Query()]


@router.post("/ingest")
def ingest(ctx: Ctx, body: Annotated[Any, Body()]) -> JSONResponse:
    rows = validate_batch(ctx, body)
    inserted, duplicates = ctx.store.ingest(rows)
    return JSONResponse({"inserted": inserted, "duplicates": duplicates})


def validate_batch(ctx: ServerContext, body: Any) -> list[JSON]:
    """Validate every event first; any problem refuses the whole batch with one 422 entry per
    problem, located at its index, and nothing is stored."""
    if not isinstance(body, dict) or "events" not in body:
        raise invalid(["body", "events"], "Field required", "missing", body)
    raw_events = body["events"]
    if not isinstance(raw_events, list):
        raise invalid(["body", "events"], "Input should be a valid list", "list_type", raw_events)
    now = ctx.now()
    live_ids: set[str] | None = None
    issues: list[JSON] = []
    valid: list[Any] = []
    for i, raw in enumerate(raw_events):
        loc: tuple[str | int, ...] = ("body", "events", i)
        if not isinstance(raw, dict):
            msg = "Input should be a valid dictionary or object to extract fields from"
            issues.append(issue(loc, msg, "model_attributes_type", raw))
            continue
        by_customer = "customer_id" in raw
        try:
            ev = (_customer_event if by_customer else _external_event).validate_python(raw)
        except ValidationError as e:
            issues.extend(pydantic_issues(e.errors(include_url=False), loc))
            continue
        before = len(issues)
        if ev.organization_id is not None:
            issues.append(organization_token_issue((*loc, "organization_id"), ev.organization_id))
        if ev.timestamp is not None and ev.timestamp > now and not ctx.accept_future_timestamps:
            msg = "Value error, Timestamp must be in the past."
            issues.append(issue((*loc, "timestamp"), msg, "value_error", raw.get("timestamp")))
        if isinstance(ev, EventCreateCustomer):
            if live_ids is None:
                live_ids = {c["id"] for c in ctx.live_customers()}
            if str(ev.customer_id) not in live_ids:
                msg = "Customer not found."
                issues.append(issue((*loc, "customer_id"), msg, "value_error", raw["customer_id"]))
        if len(issues) == before:
            valid.append(ev)
    if issues:
        raise ValidationFailed(issues)
    return _rows(ctx, valid, now)


def _rows(ctx: ServerContext, evs: list[Any], now: datetime) -> list[JSON]:
    ingested_at = now.timestamp()
    # A batch's events share few timestamps (a client sends minutes of usage): render each
    # once.
    times: dict[datetime, tuple[str | None, float]] = {}
    rows = []
    for ev, event_id in zip(evs, new_ids(len(evs)), strict=True):
        ts = ev.timestamp or now
        rendered = times.get(ts)
        if rendered is None:
            rendered = times[ts] = (iso(ts), ts.timestamp())
        by_customer = isinstance(ev, EventCreateCustomer)
        rows.append(
            {
                "id": event_id,
                "organization_id": ctx.org_id,
                "external_id": ev.external_id,
                "name": ev.name,
                "customer_id": str(ev.customer_id) if by_customer else None,
                "external_customer_id": None if by_customer else ev.external_customer_id,
                "member_id": str(ev.member_id) if by_customer and ev.member_id else None,
                "external_member_id": None if by_customer else ev.external_member_id,
                "parent_ref": ev.parent_id,
                "timestamp": rendered[0],
                "ts": rendered[1],
                "ingested_at": ingested_at,
                "metadata": ev.metadata,
            }
        )
    return rows


def identity_query(
    ctx: ServerContext, customer_ids: list[str] | None, external_ids: list[str] | None
) -> EventQuery:
    """Events are attributed by Polar id or by external id, whichever the event carried."""
    if customer_ids is None and external_ids is None:
        return EventQuery()
    cids, eids = set(customer_ids or []), set(external_ids or [])
    for c in ctx.live_customers():
        if c["id"] in (customer_ids or []) and c["external_id"]:
            eids.add(c["external_id"])
        if c["external_id"] in (external_ids or []):
            cids.add(c["id"])
    return EventQuery(customer_ids=sorted(cids), external_customer_ids=sorted(eids))


def render_events(ctx: ServerContext, rows: list[JSON]) -> list[JSON]:
    customers = customer_index(ctx.store)
    out = []
    for ev in rows:
        parent = ctx.store.event_id_for_ref(ev["parent_ref"]) if ev["parent_ref"] else None
        out.append(render_event(ev, ctx.org_id, customers, parent))
    return out


@router.get("/")
def list_events(
    ctx: Ctx,
    request: Request,
    filter: str | None = None,
    start_timestamp: AwareDatetime | None = None,
    end_timestamp: AwareDatetime | None = None,
    organization_id: UUIDs = None,
    customer_id: UUIDs = None,
    external_customer_id: Strings = None,
    meter_id: UUID | None = None,
    name: Strings = None,
    source: Annotated[list[Literal["user", "system"]] | None, Query()] = None,
    query: str | None = None,
    parent_id: str | None = None,
    depth: Annotated[int | None, Query(ge=0, le=5)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Strings = None,
) -> JSONResponse:
    q = identity_query(
        ctx, as_list([str(c) for c in customer_id] if customer_id else None), external_customer_id
    )
    q.names = name
    q.ts_from = start_timestamp.timestamp() if start_timestamp else None
    q.ts_to = end_timestamp.timestamp() if end_timestamp else None
    descending = (sorting or ["-timestamp"])[0] != "timestamp"
    checks = _python_checks(ctx, request, filter, meter_id, query, parent_id, depth)
    if (organization_id and ctx.org_id not in {str(o) for o in organization_id}) or (
        source and "user" not in source
    ):
        return JSONResponse(page_response([], page, limit))
    if not checks:
        size = clamp_limit(limit)
        total = ctx.store.count_events(q)
        rows = ctx.store.select_events(
            q, descending=descending, limit=size, offset=(page - 1) * size
        )
        pagination = {"total_count": total, "max_page": math.ceil(total / size)}
        return JSONResponse({"items": render_events(ctx, rows), "pagination": pagination})
    rows = [
        r
        for r in ctx.store.select_events(q, descending=descending)
        if all(check(r) for check in checks)
    ]
    body = page_response(rows, page, limit)
    body["items"] = render_events(ctx, body["items"])
    return JSONResponse(body)


def _python_checks(
    ctx: ServerContext,
    request: Request,
    filter_text: str | None,
    meter_id: UUID | None,
    query: str | None,
    parent_id: str | None,
    depth: int | None,
) -> list[Any]:
    checks: list[Any] = []
    if filter_text is not None:
        try:
            flt = _filter.validate_python(json.loads(filter_text)).model_dump()
        except (ValueError, ValidationError) as e:
            raise invalid(["query", "filter"], "Invalid filter.", "value_error", filter_text) from e
        checks.append(lambda r: filter_matches(r, flt))
    if meter_id is not None:
        meter = ctx.store.get("meter", str(meter_id))
        if meter is None:
            raise invalid(["query", "meter_id"], "Meter not found.", "value_error", str(meter_id))
        checks.append(lambda r: filter_matches(r, meter["filter"]))
    meta = metadata_query(request.query_params.multi_items())
    if meta:
        checks.append(lambda r: metadata_matches(r["metadata"], meta))
    if query:
        checks.append(lambda r: query.lower() in r["name"].lower())
    if parent_id is not None:
        parent = ctx.store.get_event(parent_id)
        refs = {parent_id} | (
            {parent["external_id"]} if parent and parent["external_id"] else set()
        )
        checks.append(lambda r: r["parent_ref"] in refs)
    elif depth == 0:
        checks.append(lambda r: r["parent_ref"] is None)
    return checks


@router.get("/names")
def list_names(
    ctx: Ctx,
    query: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
) -> JSONResponse:
    items = [
        {
            "name": n["name"],
            "label": n["name"],
            "source": "user",
            "occurrences": n["occurrences"],
            "first_seen": iso(datetime.fromtimestamp(n["first_seen"], UTC)),
            "last_seen": iso(datetime.fromtimestamp(n["last_seen"], UTC)),
        }
        for n in ctx.store.event_names()
        if not query or query.lower() in n["name"].lower()
    ]
    return JSONResponse(page_response(items, page, limit))


@router.get("/{id}")
def get_event(ctx: Ctx, id: UUID) -> JSONResponse:
    row = ctx.store.get_event(str(id))
    if row is None:
        raise NotFound()
    return JSONResponse(render_events(ctx, [row])[0])
