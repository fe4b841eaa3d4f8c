"""Request bodies, validated the way Polar's pydantic schemas do (422 entries with body locs)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

Interval = Literal["day", "week", "month", "year"]
Visibility = Literal["draft", "private", "public"]
MAX_INT32 = 2**31 - 1
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _check_metadata_limits(value: dict[str, Any]) -> None:
    if len(value) > 50:
        raise ValueError("Metadata can hold at most 50 keys.")
    for key, item in value.items():
        if not 1 <= len(key) <= 40:
            raise ValueError(f"Metadata key {key!r} must be 1 to 40 characters long.")
        if isinstance(item, str) and not 1 <= len(item) <= 500:
            raise ValueError(f"Metadata value for {key!r} must be 1 to 500 characters long.")


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_metadata_limits(value)
    return value


Metadata = Annotated[
    dict[str, StrictStr | StrictBool | StrictInt | float], AfterValidator(_check_metadata)
]


def _check_event_metadata(value: dict[str, Any]) -> dict[str, Any]:
    # The usual event (a handful of plain keys with short strings and numbers) passes in one
    # look at each item; anything else takes the full check below, errors in its order.
    if len(value) <= 50:
        for key, item in value.items():
            if key[:1] == "_" or not 1 <= len(key) <= 40:
                break
            kind = type(item)
            if kind is str:
                if not 1 <= len(item) <= 500:
                    break
            elif kind is not int and kind is not float and kind is not bool:
                break
        else:
            return dict(value)
    return _check_any_event_metadata(value)


def _check_any_event_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_metadata_limits({k: v for k, v in value.items() if not k.startswith("_")})
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "_cost":
            out[key] = _cost(item)
        elif key == "_llm":
            out[key] = _llm(item)
        elif isinstance(item, str | bool | int | float):
            if isinstance(item, str) and len(item) > 500:
                raise ValueError(f"Metadata value for {key!r} must be at most 500 characters.")
            out[key] = item
        else:
            raise ValueError(f"Metadata value for {key!r} must be a string, number or boolean.")
    return out


def _cost(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("currency") != "usd":
        raise ValueError("_cost must be an object with an amount and currency 'usd'.")
    try:
        amount = Decimal(str(item.get("amount")))
    except InvalidOperation as e:
        raise ValueError("_cost.amount must be a decimal number of cents.") from e
    if not amount.is_finite():
        raise ValueError("_cost.amount must be a decimal number of cents.")
    return {"amount": format(amount, "f"), "currency": "usd"}


def _llm(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError("_llm must be an object.")
    for key in ("vendor", "model"):
        if not isinstance(item.get(key), str):
            raise ValueError(f"_llm.{key} must be a string.")
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        if not isinstance(item.get(key), int) or isinstance(item.get(key), bool):
            raise ValueError(f"_llm.{key} must be an integer.")
    return dict(item)


EventMetadata = Annotated[dict[str, Any], AfterValidator(_check_event_metadata)]


class _EventBase(BaseModel):
    name: str = Field(max_length=128)
    timestamp: AwareDatetime | None = None
    external_id: str | None = None
    parent_id: str | None = None
    organization_id: str | None = None
    metadata: EventMetadata = Field(default_factory=dict)


class EventCreateCustomer(_EventBase):
    customer_id: UUID
    member_id: UUID | None = None


class EventCreateExternalCustomer(_EventBase):
    external_customer_id: str
    external_member_id: str | None = None


class FilterClauseIn(BaseModel):
    property: str = Field(min_length=1)
    operator: Literal["eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like"]
    value: (
        Annotated[StrictStr, Field(max_length=1000)]
        | StrictBool
        | Annotated[StrictInt, Field(ge=-MAX_INT32 - 1, le=MAX_INT32)]
    )


class FilterIn(BaseModel):
    conjunction: Literal["and", "or"]
    clauses: list[FilterClauseIn | FilterIn] = Field(default_factory=list)


class AggregationIn(BaseModel):
    func: Literal["count", "sum", "max", "min", "avg", "unique"] = "count"
    property: str | None = None

    @model_validator(mode="after")
    def _needs_property(self) -> AggregationIn:
        if self.func != "count" and not self.property:
            raise ValueError(f"Aggregation {self.func!r} needs a property.")
        return self

    def wire(self) -> dict[str, Any]:
        if self.func == "count":
            return {"func": "count"}
        return {"func": self.func, "property": self.property}


def check_unit(unit: str | None, label: str | None, multiplier: int | None) -> None:
    if unit == "custom" and not label:
        raise ValueError("custom_label is required when unit is 'custom'.")
    if unit not in (None, "custom") and (label is not None or multiplier is not None):
        raise ValueError("custom_label and custom_multiplier are only allowed for unit 'custom'.")


class MeterCreate(BaseModel):
    name: str = Field(min_length=3)
    filter: FilterIn
    aggregation: AggregationIn
    unit: Literal["scalar", "token", "custom"] = "scalar"
    custom_label: str | None = None
    custom_multiplier: int | None = Field(default=None, gt=0)
    metadata: Metadata = Field(default_factory=dict)
    organization_id: str | None = None

    @model_validator(mode="after")
    def _unit(self) -> MeterCreate:
        check_unit(self.unit, self.custom_label, self.custom_multiplier)
        return self


class MeterUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=3)
    filter: FilterIn | None = None
    aggregation: AggregationIn | None = None
    unit: Literal["scalar", "token", "custom"] | None = None
    custom_label: str | None = None
    custom_multiplier: int | None = Field(default=None, gt=0)
    metadata: Metadata | None = None
    is_archived: bool | None = None


class ProductCreate(BaseModel):
    name: str = Field(min_length=3, max_length=64)
    description: str | None = None
    visibility: Visibility = "public"
    recurring_interval: Interval | None = None
    recurring_interval_count: int | None = Field(default=None, ge=1, le=999)
    meter_interval: Interval | None = None
    meter_interval_count: int | None = Field(default=None, ge=1)
    trial_interval: Interval | None = None
    trial_interval_count: int | None = Field(default=None, ge=1, le=1000)
    prices: list[dict[str, Any]] = Field(min_length=1)
    medias: list[str] | None = None
    attached_custom_fields: list[Any] | None = None
    metadata: Metadata = Field(default_factory=dict)
    organization_id: str | None = None


class ProductUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=3, max_length=64)
    description: str | None = None
    visibility: Visibility | None = None
    recurring_interval: Interval | None = None
    recurring_interval_count: int | None = Field(default=None, ge=1, le=999)
    trial_interval: Interval | None = None
    trial_interval_count: int | None = Field(default=None, ge=1, le=1000)
    is_archived: bool | None = None
    prices: list[dict[str, Any]] | None = None
    medias: list[str] | None = None
    attached_custom_fields: list[Any] | None = None
    metadata: Metadata | None = None


class AddressIn(BaseModel):
    line1: str | None = None
    line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    state: str | None = None
    country: str = Field(pattern=r"^[A-Z]{2}$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("value is not a valid email address")
    return value


Email = Annotated[str, AfterValidator(_email)]


class _CustomerFields(BaseModel):
    email: Email | None = None
    name: str | None = Field(default=None, max_length=256)
    billing_address: AddressIn | None = None
    tax_id: str | None = None
    locale: str | None = None
    metadata: Metadata | None = None


class CustomerCreate(_CustomerFields):
    external_id: str | None = None
    type: Literal["individual", "team"] = "individual"
    owner: dict[str, Any] | None = None
    organization_id: str | None = None


class CustomerUpdateExternal(_CustomerFields):
    pass


class CustomerUpdate(_CustomerFields):
    external_id: str | None = None
    type: Literal["individual", "team"] | None = None


class CheckoutCreate(BaseModel):
    products: list[UUID] = Field(min_length=1)
    customer_id: UUID | None = None
    external_customer_id: str | None = None
    customer_email: Email | None = None
    customer_name: str | None = None
    success_url: str | None = None
    return_url: str | None = None
    embed_origin: str | None = None
    allow_trial: bool = True
    allow_discount_codes: bool = True
    require_billing_address: bool = False
    is_business_customer: bool = False
    custom_field_data: dict[str, Any] | None = None
    metadata: Metadata = Field(default_factory=dict)
    customer_metadata: Metadata = Field(default_factory=dict)
    organization_id: str | None = None


class CustomerSessionCreate(BaseModel):
    customer_id: UUID | None = None
    external_customer_id: str | None = None
    return_url: str | None = None


class SubscriptionCreate(BaseModel):
    product_id: UUID
    customer_id: UUID | None = None
    external_customer_id: str | None = None
    metadata: Metadata = Field(default_factory=dict)
