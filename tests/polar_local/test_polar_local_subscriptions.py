"""Subscriptions through the real SDK over real HTTP, and the webhook types each change sends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from polar.v2026_10.errors import (
    AlreadyCanceledSubscription,
    HTTPValidationError,
    ResourceNotFound,
    SubscriptionsUpdate403Error,
    SubscriptionsUpdate409Error,
)

from tests.polar_local.polar_local_support import LocalPolar, local_polar, make_catalog


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LocalPolar]:
    with local_polar(tmp_path / "polar.db") as server:
        yield server


def subscribe(lp: LocalPolar, product_id: str, ext: str = "org_1", **extra: object) -> dict:
    body = {"external_customer_id": ext, "product_id": product_id, **extra}
    return lp.control("POST", "/subscriptions", json=body)


def webhook_types(lp: LocalPolar, sub_id: str) -> list[str]:
    items = lp.control("GET", "/webhooks/deliveries", params={"limit": 1000})["items"]
    return [i["type"] for i in items if i["subscription_id"] == sub_id]


def test_control_created_subscription_parses_and_lists(lp: LocalPolar) -> None:
    meter_id, product_id = make_catalog(lp)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    end = datetime(2026, 10, 1, tzinfo=UTC)
    created = subscribe(
        lp, product_id, current_period_start=start.isoformat(), current_period_end=end.isoformat()
    )
    subscribe(lp, product_id, ext="org_2", status="past_due")

    sub = lp.polar.subscriptions.get(created["id"])
    active = lp.polar.subscriptions.list(external_customer_id="org_1", active=True)
    by_status = lp.polar.subscriptions.list(status=["past_due"])
    by_product = list(lp.polar.subscriptions.iter_list(product_id=product_id, limit=1))

    assert sub.status == "active" and sub.amount == 2000
    assert datetime.fromisoformat(sub.current_period_start) == start
    assert datetime.fromisoformat(sub.current_period_end) == end
    assert sub.customer.external_id == "org_1"
    assert sub.product.id == product_id
    assert [m.meter_id for m in sub.meters] == [meter_id]
    assert [s.id for s in active.items] == [created["id"]]
    assert [s.customer.external_id for s in by_status.items] == ["org_2"]
    assert len(by_product) == 2
    assert webhook_types(lp, created["id"]) == ["subscription.created", "subscription.active"]


def test_cancel_uncancel_and_revoke(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    sub_id = subscribe(lp, product_id)["id"]

    canceled = lp.polar.subscriptions.update(
        sub_id, cancel_at_period_end=True, customer_cancellation_reason="too_expensive"
    )
    with pytest.raises(SubscriptionsUpdate403Error):
        lp.polar.subscriptions.update(sub_id, cancel_at_period_end=True)
    restored = lp.polar.subscriptions.update(sub_id, cancel_at_period_end=False)
    with pytest.raises(SubscriptionsUpdate409Error):
        lp.polar.subscriptions.update(sub_id, cancel_at_period_end=False)
    revoked = lp.polar.subscriptions.revoke(sub_id)
    with pytest.raises(AlreadyCanceledSubscription):
        lp.polar.subscriptions.revoke(sub_id)

    assert canceled.status == "active" and canceled.cancel_at_period_end
    assert canceled.ends_at == canceled.current_period_end
    assert canceled.customer_cancellation_reason == "too_expensive"
    assert not restored.cancel_at_period_end and restored.ends_at is None
    assert revoked.status == "canceled" and revoked.ended_at is not None
    assert lp.polar.subscriptions.list(external_customer_id="org_1", active=True).items == []
    assert webhook_types(lp, sub_id) == [
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.canceled",
        "subscription.updated",
        "subscription.uncanceled",
        "subscription.updated",
        "subscription.canceled",
        "subscription.revoked",
    ]


def test_revoke_through_patch(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    sub_id = subscribe(lp, product_id)["id"]

    revoked = lp.polar.subscriptions.update(sub_id, revoke=True)

    assert revoked.status == "canceled"
    assert "subscription.revoked" in webhook_types(lp, sub_id)


def test_create_is_for_free_products_only(lp: LocalPolar) -> None:
    _, paid_id = make_catalog(lp)
    free = lp.polar.products.create(
        name="Free tier",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 0}],
    )
    lp.polar.customers.create(email="free@orzbob.dev", external_id="org_free")

    created = lp.polar.subscriptions.create(product_id=free.id, external_customer_id="org_free")
    with pytest.raises(HTTPValidationError) as paid:
        lp.polar.subscriptions.create(product_id=paid_id, external_customer_id="org_free")
    with pytest.raises(HTTPValidationError) as nobody:
        lp.polar.subscriptions.create(product_id=free.id, external_customer_id="org_nobody")

    assert created.status == "active" and created.amount == 0
    assert paid.value.error.detail[0].loc == ["body", "product_id"]
    assert nobody.value.error.detail[0].loc == ["body", "external_customer_id"]


def test_cycle_renews_or_ends(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    start = datetime(2026, 1, 31, tzinfo=UTC)
    renewing = subscribe(lp, product_id, current_period_start=start.isoformat())
    ending = subscribe(lp, product_id, ext="org_2", cancel_at_period_end=True)

    renewed = lp.control("POST", f"/subscriptions/{renewing['id']}/cycle")
    ended = lp.control("POST", f"/subscriptions/{ending['id']}/cycle")

    assert renewing["current_period_end"] == "2026-02-28T00:00:00Z"
    assert renewed["current_period_start"] == "2026-02-28T00:00:00Z"
    assert renewed["current_period_end"] == "2026-03-31T00:00:00Z"
    assert ended["status"] == "canceled" and ended["ended_at"] == ending["current_period_end"]
    assert webhook_types(lp, renewing["id"])[-2:] == ["subscription.updated", "subscription.cycled"]
    assert webhook_types(lp, ending["id"])[-2:] == ["subscription.updated", "subscription.revoked"]


def test_control_patch_moves_status(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    sub_id = subscribe(lp, product_id)["id"]

    lp.control("PATCH", f"/subscriptions/{sub_id}", json={"status": "past_due"})
    recovered = lp.control("PATCH", f"/subscriptions/{sub_id}", json={"status": "active"})

    assert recovered["status"] == "active" and recovered["past_due_at"] is None
    assert webhook_types(lp, sub_id)[2:] == [
        "subscription.updated",
        "subscription.past_due",
        "subscription.updated",
        "subscription.active",
    ]


def test_usage_shows_on_the_subscription_meter(lp: LocalPolar) -> None:
    meter_id, product_id = make_catalog(lp)
    sub_id = subscribe(lp, product_id)["id"]
    lp.polar.events.ingest(
        events=[
            {
                "name": "instance.minutes",
                "external_customer_id": "org_1",
                "external_id": str(i),
                "metadata": {"minutes": 30},
            }
            for i in range(4)
        ]
    )

    (meter,) = lp.polar.subscriptions.get(sub_id).meters

    assert meter.meter_id == meter_id
    assert meter.consumed_units == 120.0
    assert meter.amount == 6  # 120 units at 0.05 cents


def test_unknown_and_malformed_ids(lp: LocalPolar) -> None:
    with pytest.raises(ResourceNotFound):
        lp.polar.subscriptions.get("5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10")
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.subscriptions.get("not-a-uuid")

    assert err.value.error.detail[0].type == "uuid_parsing"
