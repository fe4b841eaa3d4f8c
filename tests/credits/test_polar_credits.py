"""Credits reach the customer's Polar invoice as a once-only fixed discount on the
subscription: against the local Polar-compatible server over real HTTP with the real SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from polar.v2026_10 import Polar

from orzbob.accounts.service import account_service
from orzbob.credits.service import credit_service
from orzbob.polar.client import PolarGateway, gateway_for
from orzbob.polar.orchestration.credits import (
    CREDIT_KEY,
    _ship_org,
    record_carried,
    ship_credits_to_polar,
)
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.metering.polar_support import TOKEN, billing_settings, control, local_polar


@pytest.fixture
def polar_url(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with local_polar(tmp_path) as url:
        runtime.settings = billing_settings(runtime.settings, url)
        yield url


def subscribe(polar_url: str, runtime: Runtime, org: OrgHandle) -> str:
    sdk = Polar(TOKEN, base_url=polar_url)
    product = sdk.products.create(
        name="Base + Usage",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 2000}],
    )
    with control(polar_url) as c:
        sub = c.post(
            "/subscriptions", json={"product_id": product.id, "external_customer_id": str(org.id)}
        ).json()
    with runtime.session() as s:  # what the subscription webhook records
        account_service.get_org(s, org.id).polar_subscription_id = sub["id"]
    return str(sub["id"])


def grant(client: TestClient, staff: dict[str, str], org: OrgHandle, amount: str) -> str:
    r = client.post(
        f"/v1/admin/orgs/{org.id}/credits",
        headers=staff,
        json={"amount": amount, "reason": "outage on 2026-03-09"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def polar_subscription(polar_url: str, sub_id: str) -> Any:
    return Polar(TOKEN, base_url=polar_url).subscriptions.get(sub_id)


def grants(client: TestClient, staff: dict[str, str], org: OrgHandle) -> dict[str, Any]:
    rows = client.get(f"/v1/admin/orgs/{org.id}/credits", headers=staff).json()
    return {r["id"]: r for r in rows}


def test_credits_become_one_discount_on_the_next_invoice(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("support_l2")
    sub_id = subscribe(polar_url, runtime, org)
    first = [grant(client, staff, org, "25.00"), grant(client, staff, org, "10.00")]
    assert ship_credits_to_polar(runtime) == 0

    sub = polar_subscription(polar_url, sub_id)
    assert sub.discount is not None
    assert (sub.discount.amount, sub.discount.duration, sub.discount.type) == (
        3500,
        "once",
        "fixed",
    )
    rows = grants(client, staff, org)
    assert {rows[g]["polar_state"] for g in first} == {"applied"}
    assert {rows[g]["polar_reference"] for g in first} == {sub.discount_id}

    # A later credit joins the unused one: the subscription holds one discount at a time.
    later = grant(client, staff, org, "5.00")
    ship_credits_to_polar(runtime)
    sub = polar_subscription(polar_url, sub_id)
    assert sub.discount.amount == 4000
    assert set(sub.discount.metadata[CREDIT_KEY].split(",")) == {*first, later}
    # Nothing left to do: the job sleeps.
    assert ship_credits_to_polar(runtime) != 0


def test_a_crash_after_attaching_never_credits_twice(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("support_l1")
    sub_id = subscribe(polar_url, runtime, org)
    gid = grant(client, staff, org, "12.00")
    with runtime.session() as s:
        pending = credit_service.pending_polar_applications(s)
    # Attached at Polar; the process dies here.
    _ship_org(gateway_for(runtime), pending, record=record_carried(runtime))
    assert grants(client, staff, org)[gid]["polar_state"] == "pending"

    ship_credits_to_polar(runtime)
    assert grants(client, staff, org)[gid]["polar_state"] == "applied"
    with httpx.Client(base_url=polar_url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        discounts = c.get("/v1/discounts/").json()["items"]
    assert [d["amount"] for d in discounts] == [1200]
    assert polar_subscription(polar_url, sub_id).discount.amount == 1200


def test_without_a_subscription_the_credit_waits_for_support(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org()
    staff = staff_headers("support_l2")
    gid = grant(client, staff, org, "3.00")
    ship_credits_to_polar(runtime)
    row = grants(client, staff, org)[gid]
    assert row["polar_state"] == "failed" and "no Polar subscription" in row["polar_error"]

    sub_id = subscribe(polar_url, runtime, org)
    assert client.post(f"/v1/admin/credits/{gid}/polar-retry", headers=staff).status_code == 200
    ship_credits_to_polar(runtime)
    assert grants(client, staff, org)[gid]["polar_state"] == "applied"
    assert polar_subscription(polar_url, sub_id).discount.amount == 300


def test_polar_outages_keep_the_credit_pending(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("engineering")
    subscribe(polar_url, runtime, org)
    gid = grant(client, staff, org, "700.00")
    with control(polar_url) as c:
        c.post(
            "/faults",
            json={"kind": "status", "status": 503, "count": 1, "path_prefix": "/v1/subscriptions"},
        )
    ship_credits_to_polar(runtime)
    row = grants(client, staff, org)[gid]
    assert row["polar_state"] == "pending" and "503" in row["polar_error"]
    ship_credits_to_polar(runtime)
    assert grants(client, staff, org)[gid]["polar_state"] == "applied"


def subscription_discount(polar_url: str, sub_id: str) -> tuple[int, str]:
    discount = polar_subscription(polar_url, sub_id).discount
    return int(discount.amount), str(discount.metadata[CREDIT_KEY])


def redeem(polar_url: str, discount_id: str) -> None:
    with control(polar_url) as c:
        r = c.post(f"/discounts/{discount_id}/redeem")
        assert r.status_code == 200, r.text


def test_a_redeemed_discount_carries_nothing_forward_after_a_crash(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("support_l1")
    sub_id = subscribe(polar_url, runtime, org)
    first = grant(client, staff, org, "12.00")
    with runtime.session() as s:
        pending = credit_service.pending_polar_applications(s)
    _ship_org(gateway_for(runtime), pending, record=record_carried(runtime))  # then it dies
    discount_id = str(polar_subscription(polar_url, sub_id).discount_id)
    redeem(polar_url, discount_id)  # the invoice closes and uses the credit
    second = grant(client, staff, org, "5.00")
    ship_credits_to_polar(runtime)
    rows = grants(client, staff, org)
    assert (rows[first]["polar_state"], rows[first]["polar_reference"]) == ("applied", discount_id)
    assert rows[second]["polar_state"] == "applied"
    assert subscription_discount(polar_url, sub_id) == (500, second)


def test_an_invoice_using_the_discount_during_a_run_never_credits_twice(
    client: TestClient,
    runtime: Runtime,
    polar_url: str,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("support_l1")
    sub_id = subscribe(polar_url, runtime, org)
    grant(client, staff, org, "12.00")
    ship_credits_to_polar(runtime)
    discount_id = str(polar_subscription(polar_url, sub_id).discount_id)
    second = grant(client, staff, org, "5.00")
    real_create = PolarGateway.create_discount
    invoices: list[str] = []

    def create_after_an_invoice(self: PolarGateway, **body: Any) -> Any:
        # The invoice closes between reading the waiting discount and replacing it.
        if not invoices:
            invoices.append(discount_id)
            redeem(polar_url, discount_id)
        return real_create(self, **body)

    monkeypatch.setattr(PolarGateway, "create_discount", create_after_an_invoice)
    ship_credits_to_polar(runtime)
    rows = grants(client, staff, org)
    assert rows[second]["polar_state"] == "applied"
    assert subscription_discount(polar_url, sub_id) == (500, second)
