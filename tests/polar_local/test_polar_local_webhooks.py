"""Signed webhook delivery to a real receiver, checked with the SDK's own verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from polar.v2026_10.webhooks import (
    PolarWebhookVerificationError,
    WebhookSubscriptionCreatedPayload,
    validate_event,
)

from tests.polar_local.polar_local_support import (
    LocalPolar,
    local_polar,
    make_catalog,
    receiver,
    wait_for,
)

SECRET = "whsec_local_test_secret_0123456789abcdefghijklmno"
FAST_RETRIES = {"webhook_retry_base_seconds": 0.01, "webhook_retry_max_seconds": 0.05}


def deliveries(lp: LocalPolar) -> list[dict]:
    return lp.control("GET", "/webhooks/deliveries", params={"limit": 1000})["items"]


def all_settled(lp: LocalPolar) -> list[dict] | None:
    items = deliveries(lp)
    if items and all(i["state"] in ("delivered", "failed") for i in items):
        return items
    return None


def test_webhooks_are_signed_and_accepted_by_the_sdk(tmp_path: Path) -> None:
    with (
        receiver() as (rec, hook_url),
        local_polar(tmp_path / "p.db", webhook_url=hook_url, webhook_secret=SECRET) as lp,
    ):
        _, product_id = make_catalog(lp)
        sub = lp.control(
            "POST",
            "/subscriptions",
            json={"external_customer_id": "org_1", "product_id": product_id},
        )
        wait_for(lambda: len(rec.snapshot()) == 2)
        calls = rec.snapshot()

    events = [validate_event(body, headers, SECRET) for headers, body in calls]
    assert [e.type for e in events] == ["subscription.created", "subscription.active"]
    assert isinstance(events[0], WebhookSubscriptionCreatedPayload)
    assert events[0].api_version == "2026-04"
    assert events[0].data.id == sub["id"]
    assert events[0].data.customer.external_id == "org_1"
    headers, body = calls[0]
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert int(headers["webhook-timestamp"]) > 0
    with pytest.raises(PolarWebhookVerificationError):
        validate_event(body, headers, SECRET + "x")


def test_failed_deliveries_are_retried_with_the_same_webhook_id(tmp_path: Path) -> None:
    with (
        receiver(statuses=[500, 503]) as (rec, hook_url),
        local_polar(
            tmp_path / "p.db", webhook_url=hook_url, webhook_secret=SECRET, **FAST_RETRIES
        ) as lp,
    ):
        _, product_id = make_catalog(lp)
        sub = lp.control(
            "POST",
            "/subscriptions",
            json={"external_customer_id": "org_1", "product_id": product_id},
        )
        lp.polar.subscriptions.update(sub["id"], cancel_at_period_end=True)
        items = wait_for(lambda: all_settled(lp))
        calls = rec.snapshot()

    ids = [h["webhook-id"] for h, _ in calls]
    # The first event failed twice, then every event arrived once, in order (FIFO).
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids)) == 4 and len(ids) == 6
    assert [json.loads(b)["type"] for _, b in calls][2:] == [
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.canceled",
    ]
    for headers, body in calls:
        validate_event(body, headers, SECRET)
    first = next(i for i in items if i["webhook_id"] == ids[0])
    assert first["state"] == "delivered" and first["attempts"] == 3
    assert [a["status_code"] for a in first["attempt_log"]] == [500, 503, 200]


def test_delivery_gives_up_after_max_attempts(tmp_path: Path) -> None:
    with (
        receiver(statuses=[500] * 10) as (rec, hook_url),
        local_polar(
            tmp_path / "p.db",
            webhook_url=hook_url,
            webhook_secret=SECRET,
            webhook_max_attempts=3,
            **FAST_RETRIES,
        ) as lp,
    ):
        _, product_id = make_catalog(lp)
        lp.control("PUT", "/webhooks", json={"url": hook_url, "secret": SECRET})
        sub = lp.control(
            "POST",
            "/subscriptions",
            json={
                "external_customer_id": "org_1",
                "product_id": product_id,
                "status": "incomplete",
            },
        )
        (item,) = wait_for(lambda: all_settled(lp))

    assert item["subscription_id"] == sub["id"]
    assert item["state"] == "failed" and item["attempts"] == 3
    assert len(rec.snapshot()) == 3


def test_send_on_demand_and_configure_at_runtime(tmp_path: Path) -> None:
    with receiver() as (rec, hook_url), local_polar(tmp_path / "p.db") as lp:
        _, product_id = make_catalog(lp)
        sub = lp.control(
            "POST",
            "/subscriptions",
            json={"external_customer_id": "org_1", "product_id": product_id},
        )
        settings = lp.control("PUT", "/webhooks", json={"url": hook_url, "secret": SECRET})
        sent = lp.control(
            "POST",
            "/webhooks/send",
            json={"type": "subscription.updated", "subscription_id": sub["id"]},
        )
        wait_for(lambda: rec.snapshot())
        refused = lp.http.post(
            "/_control/webhooks/send", json={"type": "order.paid", "subscription_id": sub["id"]}
        )
        unconfigured = [i["state"] for i in deliveries(lp)][:2]

    ((headers, body),) = rec.snapshot()
    event = validate_event(body, headers, SECRET)
    assert settings["url"] == hook_url and settings["secret_set"] is True
    assert "secret" not in settings
    assert headers["webhook-id"] == sent["webhook_id"]
    assert event.type == "subscription.updated" and event.data.id == sub["id"]
    assert refused.status_code == 422
    assert unconfigured == ["no_endpoint", "no_endpoint"]
