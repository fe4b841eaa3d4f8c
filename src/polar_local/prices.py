"""Product prices: create shapes, `{"id": ...}` references on update, and combination rules."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from .common import JSON, iso, new_id
from .errors import Loc, ValidationFailed, issue, pydantic_issues
from .fixtures import meter_embed, unit_amount_text
from .store import Store

MINIMUM_AMOUNT = {"usd": 50}
UNSUPPORTED = ("seat_based", "unit_based", "metered_tiers")


class _PriceBase(BaseModel):
    price_currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    tax_behavior: Literal["location", "inclusive", "exclusive"] | None = None


class FixedPriceIn(_PriceBase):
    amount_type: Literal["fixed"]
    price_amount: int = Field(ge=0, le=99_999_999)


class FreePriceIn(_PriceBase):
    amount_type: Literal["free"]


class CustomPriceIn(_PriceBase):
    amount_type: Literal["custom"]
    minimum_amount: int | None = Field(default=None, ge=0)
    maximum_amount: int | None = Field(default=None, ge=0)
    preset_amount: int | None = Field(default=None, ge=0)


class MeteredUnitPriceIn(_PriceBase):
    amount_type: Literal["metered_unit"]
    meter_id: UUID
    unit_amount: Decimal = Field(gt=0, max_digits=17, decimal_places=12)
    cap_amount: int | None = Field(default=None, ge=0)


_price_adapter: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        FixedPriceIn | FreePriceIn | CustomPriceIn | MeteredUnitPriceIn,
        Field(discriminator="amount_type"),
    ]
)


def new_price(store: Store, raw: Any, loc: Loc, product_id: str, now: datetime) -> JSON:
    if isinstance(raw, dict) and raw.get("amount_type") in UNSUPPORTED:
        raise ValidationFailed(
            [
                issue(
                    [*loc, "amount_type"],
                    "This price type is not supported by the local Polar server.",
                    "value_error",
                    raw["amount_type"],
                )
            ]
        )
    try:
        parsed = _price_adapter.validate_python(raw)
    except ValidationError as e:
        raise ValidationFailed(pydantic_issues(e.errors(include_url=False), loc)) from e
    base: JSON = {
        "created_at": iso(now),
        "modified_at": None,
        "id": new_id(),
        "source": "catalog",
        "amount_type": "fixed" if parsed.amount_type == "free" else parsed.amount_type,
        "price_currency": parsed.price_currency,
        "tax_behavior": parsed.tax_behavior,
        "is_archived": False,
        "product_id": product_id,
    }
    if isinstance(parsed, FreePriceIn):
        return {**base, "price_amount": 0}
    if isinstance(parsed, FixedPriceIn):
        minimum = MINIMUM_AMOUNT.get(parsed.price_currency, 1)
        if 0 < parsed.price_amount < minimum:
            raise ValidationFailed(
                [
                    issue(
                        [*loc, "price_amount"],
                        f"Amount must be 0 (free) or at least {minimum}.",
                        "value_error",
                        parsed.price_amount,
                    )
                ]
            )
        return {**base, "price_amount": parsed.price_amount}
    if isinstance(parsed, CustomPriceIn):
        return {
            **base,
            "minimum_amount": 50 if parsed.minimum_amount is None else parsed.minimum_amount,
            "maximum_amount": parsed.maximum_amount,
            "preset_amount": parsed.preset_amount,
        }
    meter = store.get("meter", str(parsed.meter_id))
    if meter is None or meter.get("archived_at") is not None:
        raise ValidationFailed(
            [
                issue(
                    [*loc, "meter_id"], "Meter does not exist.", "value_error", str(parsed.meter_id)
                )
            ]
        )
    return {
        **base,
        "cap_amount": parsed.cap_amount,
        "meter_id": meter["id"],
        "meter": meter_embed(meter),
        "unit_amount": unit_amount_text(parsed.unit_amount),
    }


def build_prices(
    store: Store,
    raw_prices: list[dict[str, Any]],
    *,
    product_id: str,
    existing: list[JSON],
    recurring: bool,
    now: datetime,
) -> list[JSON]:
    """The product's full price list after a create or update: prices referenced by id stay,
    other existing prices are archived (kept for subscriptions), new shapes are added."""
    issues: list[JSON] = []
    kept: set[str] = set()
    added: list[JSON] = []
    live = {p["id"]: p for p in existing if not p["is_archived"]}
    for i, raw in enumerate(raw_prices):
        loc = ("body", "prices", i)
        if isinstance(raw, dict) and "id" in raw and "amount_type" not in raw:
            if raw["id"] in live:
                kept.add(raw["id"])
            else:
                issues.append(
                    issue([*loc, "id"], "Price does not exist.", "value_error", raw["id"])
                )
            continue
        try:
            added.append(new_price(store, raw, loc, product_id, now))
        except ValidationFailed as e:
            issues.extend(e.issues)
    if issues:
        raise ValidationFailed(issues)
    result = [
        p if p["id"] in kept or p["is_archived"] else {**p, "is_archived": True} for p in existing
    ]
    result.extend(added)
    problem = combination_problem([p for p in result if not p["is_archived"]], recurring)
    if problem:
        raise ValidationFailed([issue(["body", "prices"], problem, "value_error")])
    return result


def combination_problem(prices: list[JSON], recurring: bool) -> str | None:
    """At most one fixed plus one seat-based price, or one custom price, or one free price;
    plus any number of metered prices (recurring products only)."""
    if not prices:
        return "A product needs at least one price."
    kinds = [p["amount_type"] for p in prices]
    free = [p for p in prices if p["amount_type"] == "fixed" and p["price_amount"] == 0]
    static = [k for k in kinds if k in ("fixed", "custom", "seat_based")]
    if "metered_unit" in kinds and not recurring:
        return "Metered prices are only allowed on recurring products."
    if free and len(static) > 1:
        return "A free price can't be combined with other prices."
    if kinds.count("fixed") > 1 or kinds.count("custom") > 1 or kinds.count("seat_based") > 1:
        return "A product can have at most one price of each static type."
    if "custom" in kinds and ("fixed" in kinds or "seat_based" in kinds):
        return "A custom price can't be combined with a fixed or seat-based price."
    return None
