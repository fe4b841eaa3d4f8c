"""The local Polar server's own signed webhooks, delivered over HTTP to the service, with the
real SDK on the way out: sync, checkout, subscription, cancellation, period end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from polar.v2026_10 import Polar

from orzbob.api.app import create_app
from orzbob.jobs import register_jobs
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, advance
from tests.metering.polar_support import TOKEN
from tests.polar.support import (
    SECRET,
    envelope,
    org_row,
    signed_headers,
    subscription,
    sync_catalog,
    use_billing,
)
from tests.polar_local.polar_local_support import local_polar as polar_server
from tests.polar_local.polar_local_support import wait_for
from tests.serving import serve

DAY = 86400


@contextmanager
def service_and_polar(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The service on a real port, and a local Polar server that sends it webhooks."""
    with (
        serve(create_app(runtime)) as service,
        polar_server(
            tmp_path / "polar.db",
            accept_future_timestamps=True,
            webhook_url=f"{service}/v1/webhooks/polar",
            webhook_secret=SECRET,
        ) as server,
    ):
        polar = server.url
        use_billing(runtime, polar)
        register_jobs(runtime)
        yield service, polar


def test_subscription_webhooks_set_the_plan_and_cancellation_ends_it_at_period_end(
    runtime: Runtime, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    org = make_org()
    with (
        service_and_polar(runtime, tmp_path) as (_, polar_url),
        Polar(TOKEN, base_url=polar_url) as polar,
    ):
        products = sync_catalog(runtime).products
        begin, end = T0 - timedelta(days=5), T0 + timedelta(days=25)
        sub = httpx.post(
            f"{polar_url}/_control/subscriptions",
            json={
                "product_id": products["base-plus-usage"],
                "external_customer_id": str(org.id),
                "customer_email": "ops@acme.test",
                "current_period_start": begin.isoformat(),
                "current_period_end": end.isoformat(),
            },
        ).json()
        wait_for(lambda: org_row(runtime, org.id).plan_id == "base-plus-usage")
        row = org_row(runtime, org.id)
        assert row.polar_subscription_id == sub["id"]
        assert row.polar_customer_id == sub["customer_id"]
        assert (row.subscription_period_start, row.subscription_period_end) == (begin, end)

        # The customer cancels through Polar (the real API call); access lasts the period.
        polar.subscriptions.update(sub["id"], cancel_at_period_end=True)
        wait_for(lambda: _delivered(polar_url, "subscription.canceled"))
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"
        advance(runtime, 25 * DAY - 60)
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"
        advance(runtime, 120)
        assert org_row(runtime, org.id).plan_id == "free-tier"


def test_checkout_then_payment_upgrades_the_org(
    runtime: Runtime, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    org = make_org()
    with service_and_polar(runtime, tmp_path) as (service, polar_url):
        sync_catalog(runtime)
        r = httpx.post(
            f"{service}/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"}
        )
        assert r.status_code == 201, r.text
        checkout = r.json()
        assert checkout["url"].startswith(polar_url) and checkout["plan"] == "base-plus-usage"
        customer_id = org_row(runtime, org.id).polar_customer_id
        assert customer_id  # created on demand, before the checkout

        done = httpx.post(f"{polar_url}/_control/checkouts/{checkout['checkout_id']}/complete")
        assert done.status_code == 201, done.text
        wait_for(lambda: org_row(runtime, org.id).plan_id == "base-plus-usage")
        stats = httpx.get(f"{polar_url}/_control/stats").json()
    row = org_row(runtime, org.id)
    assert row.polar_customer_id == customer_id == done.json()["customer_id"]
    assert row.polar_subscription_id == done.json()["id"]
    assert stats["customers"] == 1


def _delivered(polar_url: str, event_type: str) -> bool:
    items = httpx.get(
        f"{polar_url}/_control/webhooks/deliveries", params={"type": event_type}
    ).json()["items"]
    return bool(items) and all(i["state"] == "delivered" for i in items)


def test_concurrent_copies_of_one_delivery_are_processed_once(
    runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    use_billing(runtime, "http://127.0.0.1:9")
    org = make_org()
    body = envelope("subscription.active", subscription(org.id, start=T0))
    headers = signed_headers(body, webhook_id="evt_race")
    with (
        serve(create_app(runtime)) as service,
        httpx.Client(base_url=service) as c,
        ThreadPoolExecutor(8) as pool,
    ):
        answers = list(
            pool.map(
                lambda _: c.post("/v1/webhooks/polar", content=body, headers=headers), range(8)
            )
        )
    statuses = sorted(r.json()["status"] for r in answers)
    assert all(r.status_code == 200 for r in answers)
    assert statuses == ["duplicate"] * 7 + ["processed"]
