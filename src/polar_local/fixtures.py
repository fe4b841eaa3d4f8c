"""Builders and renderers for the wire objects, with the full field sets SDK 1.x requires.

Field sets were checked against `dataclasses.fields(polar.v2026_10.outputs.<Model>)`; the
tests parse every answer with the SDK itself. Only enum values the SDK knows are emitted.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .common import JSON, iso, new_id, parse_iso, stable_id
from .filters import aggregate, filter_matches
from .store import EventQuery, Store

STATIC_AMOUNT_TYPES = ("fixed", "custom", "seat_based")
ACTIVE_STATUSES = ("trialing", "active")
REVOKED_STATUSES = ("past_due", "canceled", "unpaid")


def new_customer(org_id: str, now: datetime, fields: JSON) -> JSON:
    address = fields.get("billing_address")
    tax_id = fields.get("tax_id")
    return {
        "id": new_id(),
        "created_at": iso(now),
        "modified_at": None,
        "metadata": fields.get("metadata") or {},
        "external_id": fields.get("external_id") or None,
        "email": fields.get("email"),
        "email_verified": False,
        "type": fields.get("type") or "individual",
        "name": fields.get("name"),
        "billing_name": fields.get("name"),
        "billing_address": address,
        "tax_id": [tax_id, None] if tax_id else None,
        "locale": fields.get("locale"),
        "organization_id": org_id,
        "default_payment_method_id": None,
        "deleted_at": None,
        "first_user_event_at": None,
        "avatar_url": None,
    }


def new_meter(org_id: str, now: datetime, fields: JSON) -> JSON:
    return {
        "id": new_id(),
        "created_at": iso(now),
        "modified_at": None,
        "name": fields["name"],
        "unit": fields.get("unit") or "scalar",
        "custom_label": fields.get("custom_label"),
        "custom_multiplier": fields.get("custom_multiplier"),
        "filter": fields["filter"],
        "aggregation": fields["aggregation"],
        "organization_id": org_id,
        "archived_at": None,
        "metadata": fields.get("metadata") or {},
    }


def meter_embed(meter: JSON) -> JSON:
    keys = ("id", "name", "unit", "custom_label", "custom_multiplier")
    return {k: meter.get(k) for k in keys}


def unit_amount_text(value: Decimal) -> str:
    # Polar keeps unit amounts in a NUMERIC(17, 12) column and returns them with that scale.
    return format(value.quantize(Decimal("0.000000000001")), "f")


def render_price(store: Store, price: JSON) -> JSON:
    out = dict(price)
    if out["amount_type"] == "metered_unit":
        meter = store.get("meter", out["meter_id"])
        out["meter"] = meter_embed(meter) if meter else out.get("meter")
    return out


def render_product(store: Store, product: JSON, *, include_archived_prices: bool = False) -> JSON:
    out = {k: v for k, v in product.items() if not k.startswith("_")}
    prices = product["prices"]
    if not include_archived_prices:
        prices = [p for p in prices if not p["is_archived"]]
    out["prices"] = [render_price(store, p) for p in prices]
    return out


def subscription_amount(prices: list[JSON]) -> tuple[int, str]:
    amount = 0
    for p in prices:
        if p["amount_type"] == "fixed":
            amount += p["price_amount"]
        elif p["amount_type"] == "custom":
            amount += p.get("preset_amount") or p.get("minimum_amount") or 0
    currency = prices[0]["price_currency"] if prices else "usd"
    return amount, currency


def new_subscription(
    customer: JSON,
    product: JSON,
    *,
    now: datetime,
    status: str,
    period_start: datetime,
    period_end: datetime,
    metadata: JSON | None = None,
    checkout_id: str | None = None,
) -> JSON:
    prices = [p for p in product["prices"] if not p["is_archived"]]
    amount, currency = subscription_amount(prices)
    metered = any(p["amount_type"] == "metered_unit" for p in prices)
    return {
        "created_at": iso(now),
        "modified_at": None,
        "id": new_id(),
        "amount": amount,
        "currency": currency,
        "recurring_interval": product["recurring_interval"],
        "recurring_interval_count": product["recurring_interval_count"] or 1,
        "status": status,
        "current_period_start": iso(period_start),
        "current_period_end": iso(period_end),
        "current_meter_period_start": iso(period_start) if metered else None,
        "current_meter_period_end": iso(period_end) if metered else None,
        "trial_start": None,
        "trial_end": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "started_at": iso(period_start),
        "ends_at": None,
        "ended_at": None,
        "past_due_at": None,
        "pause_at_period_end": False,
        "paused_at": None,
        "resumes_at": None,
        "customer_id": customer["id"],
        "product_id": product["id"],
        "discount_id": None,
        "checkout_id": checkout_id,
        "seats": None,
        "units": None,
        "customer_cancellation_reason": None,
        "customer_cancellation_comment": None,
        "metadata": metadata or {},
        "custom_field_data": {},
        "_price_ids": [p["id"] for p in prices],
    }


def render_subscription(store: Store, core: JSON) -> JSON:
    out = {k: v for k, v in core.items() if not k.startswith("_")}
    customer = store.get("customer", core["customer_id"]) or {}
    product = store.get("product", core["product_id"]) or {}
    by_id = {p["id"]: p for p in product.get("prices", [])}
    prices = [render_price(store, by_id[i]) for i in core.get("_price_ids", []) if i in by_id]
    out["customer"] = customer
    out["product"] = render_product(store, product) if product else {}
    discount = store.get("discount", core["discount_id"]) if core.get("discount_id") else None
    out["discount"] = {k: v for k, v in discount.items() if k != "products"} if discount else None
    out["prices"] = prices
    out["meters"] = _subscription_meters(store, core, customer, prices)
    out["pending_update"] = None
    return out


def _subscription_meters(
    store: Store, core: JSON, customer: JSON, prices: list[JSON]
) -> list[JSON]:
    metered = [p for p in prices if p["amount_type"] == "metered_unit"]
    if not metered:
        return []
    # Usage counts toward the window in which it was ingested, as on Polar.
    start = parse_iso(core["current_period_start"]).timestamp()
    end = parse_iso(core["current_period_end"]).timestamp()
    ext = customer.get("external_id")
    evs = store.select_events(
        EventQuery(
            customer_ids=[core["customer_id"]],
            external_customer_ids=[ext] if ext else [],
            ingested_from=start,
            ingested_to=end,
        ),
        descending=False,
    )
    result = []
    for price in metered:
        meter = store.get("meter", price["meter_id"])
        if meter is None:
            continue
        matching = [e for e in evs if filter_matches(e, meter["filter"])]
        consumed = aggregate(meter["aggregation"], matching)
        amount = (Decimal(str(consumed)) * Decimal(price["unit_amount"])).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
        cap = price.get("cap_amount")
        result.append(
            {
                "created_at": core["created_at"],
                "modified_at": None,
                "id": stable_id(core["id"], meter["id"]),
                "consumed_units": consumed,
                "credited_units": 0,
                "amount": int(amount) if cap is None else min(int(amount), cap),
                "meter_id": meter["id"],
                "meter": meter,
            }
        )
    return result


def render_event(ev: JSON, org_id: str, customers: dict[str, JSON], parent_id: str | None) -> JSON:
    """`customers` maps both Polar ids and `ext:<external_id>` keys to live customers."""
    customer = customers.get(ev["customer_id"] or "") or customers.get(
        f"ext:{ev['external_customer_id']}"
    )
    return {
        "id": ev["id"],
        "timestamp": ev["timestamp"],
        "organization_id": org_id,
        "customer_id": customer["id"] if customer else ev["customer_id"],
        "customer": customer,
        "external_customer_id": ev["external_customer_id"]
        or (customer.get("external_id") if customer else None),
        "member_id": ev["member_id"],
        "external_member_id": ev["external_member_id"],
        "child_count": 0,
        "parent_id": parent_id,
        "label": ev["name"],
        "name": ev["name"],
        "source": "user",
        "metadata": ev["metadata"],
    }


def customer_index(store: Store) -> dict[str, JSON]:
    index: dict[str, JSON] = {}
    for c in store.all("customer"):
        if c["deleted_at"] is not None:
            continue
        index[c["id"]] = c
        if c.get("external_id"):
            index[f"ext:{c['external_id']}"] = c
    return index


def new_checkout(
    base_url: str,
    org_id: str,
    now: datetime,
    products: list[JSON],
    body: JSON,
    customer: JSON | None,
) -> JSON:
    checkout_id = new_id()
    client_secret = f"polar_c_{secrets.token_hex(16)}"
    product = products[0]
    prices = [p for p in product["prices"] if not p["is_archived"]]
    amount, currency = subscription_amount(prices)
    success_url = body.get("success_url") or f"{base_url}/checkout/{client_secret}/confirmation"
    address_fields = {k: "optional" for k in ("state", "city", "postal_code", "line1", "line2")}
    is_free = amount == 0
    out: dict[str, Any] = {
        "id": checkout_id,
        "created_at": iso(now),
        "modified_at": None,
        "custom_field_data": body.get("custom_field_data") or {},
        "payment_processor": "stripe",
        "status": "open",
        "client_secret": client_secret,
        "url": f"{base_url}/checkout/{client_secret}",
        "expires_at": iso(now + timedelta(hours=1)),
        "success_url": success_url.replace("{CHECKOUT_ID}", checkout_id),
        "return_url": body.get("return_url"),
        "embed_origin": body.get("embed_origin"),
        "amount": amount,
        "seats": None,
        "min_seats": None,
        "max_seats": None,
        "units": None,
        "min_units": None,
        "max_units": None,
        "discount_amount": 0,
        "net_amount": amount,
        "tax_amount": None,
        "tax_behavior": None,
        "total_amount": amount,
        "currency": currency,
        "allow_trial": body.get("allow_trial", True),
        "active_trial_interval": None,
        "active_trial_interval_count": None,
        "trial_end": None,
        "organization_id": org_id,
        "product_id": product["id"],
        "product_price_id": prices[0]["id"] if prices else None,
        "discount_id": None,
        "allow_discount_codes": body.get("allow_discount_codes", True),
        "require_billing_address": body.get("require_billing_address", False),
        "is_discount_applicable": not is_free,
        "is_free_product_price": is_free,
        "is_payment_required": not is_free,
        "is_payment_setup_required": not is_free,
        "is_payment_form_required": not is_free,
        "customer_id": customer["id"] if customer else None,
        "is_business_customer": bool(body.get("is_business_customer", False)),
        "customer_name": body.get("customer_name") or (customer or {}).get("name"),
        "customer_email": body.get("customer_email") or (customer or {}).get("email"),
        "customer_ip_address": None,
        "customer_billing_name": None,
        "customer_billing_address": None,
        "customer_tax_id": None,
        "locale": body.get("locale"),
        "payment_method_type": None,
        "payment_processor_metadata": {},
        "billing_address_fields": {"country": "required", **address_fields},
        "trial_interval": None,
        "trial_interval_count": None,
        "metadata": body.get("metadata") or {},
        "external_customer_id": body.get("external_customer_id")
        or (customer or {}).get("external_id"),
        "products": products,
        "product": product,
        "product_price": prices[0] if prices else None,
        "prices": {p["id"]: [x for x in p["prices"] if not x["is_archived"]] for p in products},
        "discount": None,
        "subscription_id": None,
        "attached_custom_fields": [],
        "customer_metadata": body.get("customer_metadata") or {},
    }
    return out


def new_customer_session(base_url: str, now: datetime, customer: JSON, return_url: Any) -> JSON:
    token = f"polar_cst_{secrets.token_urlsafe(28)}"
    return {
        "created_at": iso(now),
        "modified_at": None,
        "id": new_id(),
        "token": token,
        "expires_at": iso(now + timedelta(hours=1)),
        "return_url": return_url,
        "customer_portal_url": f"{base_url}/portal?customer_session_token={token}",
        "customer_id": customer["id"],
        "customer": customer,
    }
