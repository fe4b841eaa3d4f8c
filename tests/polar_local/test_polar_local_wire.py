"""Raw wire checks: status codes, content type, and every field the SDK models declare."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from polar.base import deserialize
from polar.v2026_10 import outputs as o
from polar.v2026_10.webhooks import WebhookSubscriptionCreatedPayload

from tests.polar_local.polar_local_support import TOKEN, local_polar

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def has_fields(obj: dict[str, Any], model: Any) -> None:
    """Every field of the SDK dataclass is present, optional ones included, and it parses."""
    missing = {f.name for f in dataclasses.fields(model)} - set(obj)
    assert not missing, f"{model.__name__} lacks {sorted(missing)}"
    deserialize(obj, model)


def call(http: httpx.Client, method: str, path: str, status: int, **kw: Any) -> Any:
    response = http.request(method, path, headers=AUTH, **kw)
    assert response.status_code == status, response.text
    if status == 204:
        assert response.content == b""
        return None
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_status_codes_and_full_field_sets(tmp_path: Path) -> None:
    with local_polar(tmp_path / "p.db") as lp:
        http = lp.http
        flt = {
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "m"}],
        }
        meter = call(
            http,
            "POST",
            "/v1/meters/",
            201,
            json={
                "name": "Minutes",
                "filter": flt,
                "aggregation": {"func": "sum", "property": "n"},
            },
        )
        product = call(
            http,
            "POST",
            "/v1/products/",
            201,
            json={
                "name": "Pro plan",
                "recurring_interval": "month",
                "prices": [
                    {"amount_type": "fixed", "price_amount": 2000},
                    {
                        "amount_type": "metered_unit",
                        "meter_id": meter["id"],
                        "unit_amount": "0.05",
                        "cap_amount": 10_000,
                    },
                ],
            },
        )
        customer = call(
            http,
            "POST",
            "/v1/customers/",
            201,
            json={"email": "w@orzbob.dev", "external_id": "org_w"},
        )
        ingested = call(
            http,
            "POST",
            "/v1/events/ingest",
            200,
            json={
                "events": [
                    {
                        "name": "m",
                        "external_customer_id": "org_w",
                        "external_id": "1",
                        "metadata": {"n": 3, "_cost": {"amount": "0.5", "currency": "usd"}},
                    },
                ]
            },
        )
        events = call(http, "GET", "/v1/events/", 200, params={"external_customer_id": "org_w"})
        now = datetime.now(UTC)
        quantities = call(
            http,
            "GET",
            f"/v1/meters/{meter['id']}/quantities",
            200,
            params={
                "start_timestamp": (now - timedelta(days=1)).isoformat(),
                "end_timestamp": now.isoformat(),
                "interval": "day",
            },
        )
        sub = lp.control(
            "POST",
            "/subscriptions",
            json={"external_customer_id": "org_w", "product_id": product["id"]},
        )
        patched = call(
            http,
            "PATCH",
            f"/v1/subscriptions/{sub['id']}",
            200,
            json={"cancel_at_period_end": True},
        )
        revoked = call(http, "DELETE", f"/v1/subscriptions/{sub['id']}", 200)
        checkout = call(
            http,
            "POST",
            "/v1/checkouts/",
            201,
            json={"products": [product["id"]], "external_customer_id": "org_w"},
        )
        session = call(
            http, "POST", "/v1/customer-sessions/", 201, json={"external_customer_id": "org_w"}
        )
        listed = call(http, "GET", "/v1/subscriptions/", 200)
        envelope = lp.control("GET", "/webhooks/deliveries")["items"][0]["payload"]
        call(http, "PATCH", f"/v1/meters/{meter['id']}", 200, json={"is_archived": True})
        call(http, "DELETE", "/v1/customers/external/org_w", 204)

    has_fields(meter, o.Meter)
    has_fields(product, o.Product)
    has_fields(product["prices"][0], o.ProductPriceFixed)
    has_fields(product["prices"][1], o.ProductPriceMeteredUnit)
    has_fields(product["prices"][1]["meter"], o.ProductPriceMeter)
    has_fields(customer, o.CustomerIndividual)
    has_fields(ingested, o.EventsIngestResponse)
    has_fields(events, o.ListResourceEvent)
    has_fields(events["pagination"], o.Pagination)
    has_fields(events["items"][0], o.UserEvent)
    assert events["items"][0]["metadata"]["_cost"] == {"amount": "0.5", "currency": "usd"}
    has_fields(quantities, o.MeterQuantities)
    has_fields(quantities["quantities"][0], o.MeterQuantity)
    for subscription in (sub, patched, revoked, listed["items"][0], envelope["data"]):
        has_fields(subscription, o.Subscription)
        has_fields(subscription["customer"], o.SubscriptionCustomer)
        has_fields(subscription["meters"][0], o.SubscriptionMeter)
    has_fields(checkout, o.Checkout)
    has_fields(checkout["products"][0], o.CheckoutProduct)
    has_fields(checkout["billing_address_fields"], o.CheckoutBillingAddressFields)
    has_fields(session, o.CustomerSession)
    has_fields(envelope, WebhookSubscriptionCreatedPayload)


def test_validation_error_shape(tmp_path: Path) -> None:
    with local_polar(tmp_path / "p.db") as lp:
        bad_json = lp.http.post(
            "/v1/customers/", content=b"{", headers={**AUTH, "content-type": "application/json"}
        )
        bad_uuid = lp.http.get("/v1/meters/123", headers=AUTH)
        old_version = lp.http.get("/v1/meters/", headers={**AUTH, "Polar-Version": "2019-01"})

    for response in (bad_json, bad_uuid):
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "RequestValidationError"
        deserialize(body, o.HTTPValidationError)
    assert bad_uuid.json()["detail"][0]["loc"] == ["path", "id"]
    assert old_version.status_code == 404
    assert old_version.json() == {"detail": "Not Found"}
