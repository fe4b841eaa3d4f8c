"""`POST /v1/webhooks/polar`: signatures, idempotency, and what subscription events do."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.api.app import create_app
from orzbob.polar.models import ScheduledPlanChange, WebhookDelivery
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, advance
from tests.polar.support import (
    SECRET,
    envelope,
    org_row,
    signed_headers,
    subscription,
    use_billing,
)

URL = "/v1/webhooks/polar"
DAY = 86400


@pytest.fixture
def hooks(runtime: Runtime) -> Iterator[TestClient]:
    """The API with a webhook secret and every periodic job (Polar itself is not needed)."""
    from orzbob.jobs import register_jobs

    use_billing(runtime, "http://127.0.0.1:9")
    register_jobs(runtime)
    with TestClient(create_app(runtime)) as c:
        yield c


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.session() as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.received_at)))


def send(c: TestClient, event_type: str, data: dict, **sign: object):  # type: ignore[no-untyped-def]
    body = envelope(event_type, data)
    return c.post(URL, content=body, headers=signed_headers(body, **sign))  # type: ignore[arg-type]


class TestSignature:
    def test_a_valid_legacy_signature_sets_plan_customer_and_period(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        r = send(hooks, "subscription.active", subscription(org.id, start=T0 - timedelta(days=5)))
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
        row = org_row(runtime, org.id)
        assert row.plan_id == "base-plus-usage"
        assert (row.polar_customer_id, row.polar_subscription_id) == ("cus_1", "sub_1")
        assert row.subscription_period_start == T0 - timedelta(days=5)
        assert row.subscription_period_end == T0 + timedelta(days=25)
        assert [d.status for d in deliveries(runtime)] == ["processed"]

    def test_a_standard_webhooks_signature_is_accepted_too(
        self, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
        use_billing(runtime, "http://127.0.0.1:9", polar_webhook_secret=secret)
        org = make_org()
        with TestClient(create_app(runtime)) as c:
            data = subscription(org.id, start=T0)
            r = send(c, "subscription.created", data, secret=secret, standard=True)
            legacy = send(c, "subscription.updated", data, secret=secret)
        assert (r.status_code, legacy.status_code) == (200, 200)
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"

    @pytest.mark.parametrize(
        "tamper",
        [
            "wrong_secret",
            "tampered_body",
            "stale_timestamp",
            "future_timestamp",
            "no_id",
            "no_timestamp",
            "no_signature",
            "malformed_signature",
        ],
    )
    def test_anything_unverifiable_is_401_and_changes_nothing(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], tamper: str
    ) -> None:
        from datetime import UTC, datetime

        org = make_org()
        body = envelope("subscription.active", subscription(org.id, start=T0))
        headers = signed_headers(body)
        if tamper == "wrong_secret":
            headers = signed_headers(body, secret="whsec_" + "x" * 40)
        elif tamper == "tampered_body":
            body = body.replace(b"base-plus-usage", b"usage-only")
        elif tamper in ("stale_timestamp", "future_timestamp"):
            # Freshness is real time, whatever the (standing) test clock says.
            skew = timedelta(minutes=6 if tamper == "future_timestamp" else -6)
            headers = signed_headers(body, at=datetime.now(UTC) + skew)
        elif tamper == "malformed_signature":
            headers["webhook-signature"] = "v1" + headers["webhook-signature"][3:]
        else:
            del headers[{"no_id": "webhook-id", "no_timestamp": "webhook-timestamp"}.get(
                tamper, "webhook-signature"
            )]  # fmt: skip
        r = hooks.post(URL, content=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_signature" and set(r.json()) == {"error", "detail"}
        assert org_row(runtime, org.id).plan_id == "free-tier"
        assert deliveries(runtime) == []

    def test_without_a_configured_secret_nothing_is_accepted(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        r = send(client, "subscription.active", subscription(org.id, start=T0))
        assert r.status_code == 503 and r.json()["error"] == "webhooks_not_configured"


class TestDeliveries:
    def test_the_same_delivery_twice_is_handled_once(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        body = envelope("subscription.active", subscription(org.id, start=T0))
        headers = signed_headers(body, webhook_id="evt_once")
        first = hooks.post(URL, content=body, headers=headers)
        # Staff move the org meanwhile; a retry of the old delivery must not undo that.
        with runtime.session() as s:
            s.get(type(org_row(runtime, org.id)), org.id).plan_id = "usage-only"  # type: ignore[union-attr]
        again = hooks.post(URL, content=body, headers=signed_headers(body, webhook_id="evt_once"))
        assert (first.json()["status"], again.json()["status"]) == ("processed", "duplicate")
        assert again.status_code == 200
        assert org_row(runtime, org.id).plan_id == "usage-only"
        assert len(deliveries(runtime)) == 1

    @pytest.mark.parametrize(
        ("event_type", "data"),
        [
            ("order.paid", {"id": "ord_1", "status": "paid"}),
            ("brand.new_event", {"anything": [1, 2, 3]}),
            ("customer.state_changed", {"active_subscriptions": [{"status": "active"}]}),
        ],
    )
    def test_unknown_and_unused_types_are_acknowledged_and_ignored(
        self, hooks: TestClient, runtime: Runtime, event_type: str, data: dict
    ) -> None:
        r = send(hooks, event_type, data)
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        assert [(d.event_type, d.status) for d in deliveries(runtime)] == [(event_type, "ignored")]

    def test_a_new_status_value_is_not_an_error(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        data = subscription(org.id, start=T0, status="hibernating", brand_new_field={"x": 1})
        r = send(hooks, "subscription.updated", data)
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        row = org_row(runtime, org.id)
        assert row.plan_id == "free-tier" and row.polar_customer_id == "cus_1"

    @pytest.mark.parametrize("plan", ["enterprise-gold", None])
    def test_an_unknown_or_missing_plan_is_recorded_as_failed_not_guessed(
        self,
        hooks: TestClient,
        runtime: Runtime,
        make_org: Callable[..., OrgHandle],
        plan: str | None,
    ) -> None:
        org = make_org(plan="usage-only")
        r = send(hooks, "subscription.active", subscription(org.id, plan=plan, start=T0))
        assert r.status_code == 202 and r.json()["status"] == "failed"
        assert ("enterprise-gold" if plan else "no orzbob_plan metadata") in r.json()["detail"]
        row = org_row(runtime, org.id)
        assert (row.plan_id, row.polar_subscription_id) == ("usage-only", None)
        [d] = deliveries(runtime)
        assert d.status == "failed" and d.error

    def test_a_failed_delivery_is_processed_again_when_polar_redelivers_it(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        data = subscription(None, customer_id="cus_later", start=T0)
        body = envelope("subscription.active", data)
        first = hooks.post(URL, content=body, headers=signed_headers(body, webhook_id="evt_r"))
        assert first.status_code == 202 and "cus_later" in first.json()["detail"]
        with runtime.session() as s:  # support maps the customer by hand
            s.get(type(org_row(runtime, org.id)), org.id).polar_customer_id = "cus_later"  # type: ignore[union-attr]
        again = hooks.post(URL, content=body, headers=signed_headers(body, webhook_id="evt_r"))
        assert again.json()["status"] == "processed"
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"
        assert [d.status for d in deliveries(runtime)] == ["processed"]

    def test_a_body_that_is_not_an_event_is_400_after_verification(
        self, hooks: TestClient, runtime: Runtime
    ) -> None:
        body = b'["not", "an", "envelope"]'
        r = hooks.post(URL, content=body, headers=signed_headers(body))
        assert r.status_code == 400 and set(r.json()) == {"error", "detail"}
        # Recorded for support, as rejected: no effect, and never retried into processing.
        assert [d.status for d in deliveries(runtime)] == ["rejected"]


def pending(runtime: Runtime) -> list[ScheduledPlanChange]:
    with runtime.session() as s:
        return list(
            s.scalars(
                select(ScheduledPlanChange).where(
                    ScheduledPlanChange.applied_at.is_(None),
                    ScheduledPlanChange.canceled_at.is_(None),
                )
            )
        )


class TestCancellation:
    def test_cancel_keeps_the_plan_until_period_end_then_free_tier(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        begin = T0 - timedelta(days=5)  # period ends at T0 + 25 days
        send(hooks, "subscription.active", subscription(org.id, start=begin))
        r = send(
            hooks,
            "subscription.canceled",
            subscription(org.id, start=begin, cancel_at_period_end=True),
        )
        assert r.json()["status"] == "processed"
        [change] = pending(runtime)
        assert (change.plan_id, change.effective_at) == ("free-tier", T0 + timedelta(days=25))
        advance(runtime, 25 * DAY - 60)
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"
        advance(runtime, 120)
        row = org_row(runtime, org.id)
        assert (row.plan_id, row.polar_subscription_id) == ("free-tier", None)
        assert pending(runtime) == []
        # Later periods continue on the subscription's anchor day.
        assert row.subscription_period_end == T0 + timedelta(days=25)

    def test_uncancel_removes_the_scheduled_change(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        canceled = subscription(org.id, start=T0, cancel_at_period_end=True)
        send(hooks, "subscription.canceled", canceled)
        assert len(pending(runtime)) == 1
        r = send(hooks, "subscription.uncanceled", subscription(org.id, start=T0))
        assert r.json()["status"] == "processed" and pending(runtime) == []
        advance(runtime, 31 * DAY)
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"

    def test_revocation_also_waits_for_the_period_end(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        send(hooks, "subscription.active", subscription(org.id, start=T0))
        revoked = subscription(org.id, start=T0, status="canceled", ended_at=T0)
        assert send(hooks, "subscription.revoked", revoked).json()["status"] == "processed"
        assert org_row(runtime, org.id).plan_id == "base-plus-usage"
        advance(runtime, 30 * DAY + 60)
        assert org_row(runtime, org.id).plan_id == "free-tier"

    def test_a_period_that_already_ended_applies_at_once(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        old = T0 - timedelta(days=40)
        send(hooks, "subscription.active", subscription(org.id, start=old))
        ended = subscription(org.id, start=old, status="canceled", ended_at=old + timedelta(30))
        send(hooks, "subscription.revoked", ended)
        assert org_row(runtime, org.id).plan_id == "free-tier" and pending(runtime) == []

    def test_the_end_of_a_replaced_subscription_changes_nothing(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        send(hooks, "subscription.active", subscription(org.id, start=T0, sub_id="sub_old"))
        newer = subscription(org.id, start=T0, sub_id="sub_new", plan="usage-only")
        send(hooks, "subscription.active", newer)
        ended = subscription(org.id, start=T0, sub_id="sub_old", status="canceled", ended_at=T0)
        r = send(hooks, "subscription.revoked", ended)
        assert r.json()["status"] == "ignored" and pending(runtime) == []
        row = org_row(runtime, org.id)
        assert (row.plan_id, row.polar_subscription_id) == ("usage-only", "sub_new")

    def test_cycled_moves_the_period(
        self, hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        send(hooks, "subscription.active", subscription(org.id, start=T0 - timedelta(days=30)))
        send(hooks, "subscription.cycled", subscription(org.id, start=T0))
        row = org_row(runtime, org.id)
        assert (row.subscription_period_start, row.subscription_period_end) == (
            T0,
            T0 + timedelta(days=30),
        )
        with runtime.session() as s:
            assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 2


def test_payload_is_kept_for_support(
    hooks: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    data = subscription(org.id, start=T0)
    send(hooks, "subscription.created", data)
    [d] = deliveries(runtime)
    assert d.payload["data"]["id"] == "sub_1" and d.event_type == "subscription.created"
    assert json.loads(json.dumps(d.payload))["type"] == "subscription.created"
    assert SECRET not in json.dumps(d.payload)
