"""Discounts: the fixed-amount, once-only kind the billing service uses to pass support credits
to the customer's next invoice (plus percentage ones, which Polar also has)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .common import iso, page_response, sort_items
from .context import Ctx, refuse_organization_id
from .schemas import Metadata

router = APIRouter(prefix="/v1/discounts")


class DiscountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    type: Literal["fixed", "percentage"] = "fixed"
    duration: Literal["once", "forever", "repeating"]
    duration_in_months: int | None = Field(None, ge=1, le=999)
    amount: int | None = Field(None, gt=0)
    currency: str | None = "usd"
    basis_points: int | None = Field(None, ge=1, le=10000)
    code: str | None = Field(None, min_length=3, max_length=256, pattern=r"^[A-Za-z0-9]+$")
    starts_at: str | None = None
    ends_at: str | None = None
    max_redemptions: int | None = Field(None, ge=1)
    max_redemptions_per_customer: int | None = Field(None, ge=1)
    products: list[uuid.UUID] | None = None
    metadata: Metadata = Field(default_factory=dict)
    organization_id: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> DiscountCreate:
        if self.type == "fixed" and self.amount is None:
            raise ValueError("amount is required for a fixed discount")
        if self.type == "percentage" and self.basis_points is None:
            raise ValueError("basis_points is required for a percentage discount")
        if (self.duration == "repeating") != (self.duration_in_months is not None):
            raise ValueError("duration_in_months goes with, and only with, duration=repeating")
        return self


@router.post("/")
def create_discount(ctx: Ctx, body: DiscountCreate) -> JSONResponse:
    refuse_organization_id(body.organization_id)
    now = iso(ctx.now())
    discount: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "created_at": now,
        "modified_at": None,
        "name": body.name,
        "type": body.type,
        "duration": body.duration,
        "code": body.code,
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "max_redemptions": body.max_redemptions,
        "max_redemptions_per_customer": body.max_redemptions_per_customer,
        "redemptions_count": 0,
        "organization_id": ctx.org_id,
        "metadata": body.metadata,
        "products": [],
    }
    if body.duration == "repeating":
        discount["duration_in_months"] = body.duration_in_months
    if body.type == "fixed":
        currency = (body.currency or "usd").lower()
        discount.update(amount=body.amount, currency=currency, amounts={currency: body.amount})
    else:
        discount["basis_points"] = body.basis_points
    ctx.store.put("discount", discount)
    return JSONResponse(discount, status_code=201)


@router.get("/")
def list_discounts(
    ctx: Ctx,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1)] = 10,
    sorting: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    items = ctx.store.all("discount")
    return JSONResponse(page_response(sort_items(items, sorting or ["-created_at"]), page, limit))


@router.get("/{id}")
def get_discount(ctx: Ctx, id: uuid.UUID) -> JSONResponse:
    return JSONResponse(ctx.require("discount", id))
