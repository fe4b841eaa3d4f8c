"""Orgs as Polar customers (external id = org id), over real HTTP to the local server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from orzbob.accounts.models import Role
from orzbob.accounts.service import account_service
from orzbob.api.app import create_app
from orzbob.polar import customers
from orzbob.polar.client import PolarGateway, PolarUnavailable
from orzbob.polar.customers import CustomerConflict, customer_service
from orzbob.polar.orchestration.customers import ensure_customer, sync_missing_customers
from orzbob.polar.tasks import create_missing_customers
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.metering.polar_support import control, local_polar, make_records
from tests.polar.support import org_row, sync_catalog, use_billing


@pytest.fixture
def polar_url(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with local_polar(tmp_path) as url:
        use_billing(runtime, url)
        yield url


@pytest.fixture
def gateway(runtime: Runtime, polar_url: str) -> Iterator[PolarGateway]:
    gw = PolarGateway(runtime.settings)
    yield gw
    gw.close()


def customer_posts(url: str) -> int:
    with control(url) as c:
        items = c.get("/requests", params={"path_prefix": "/v1/customers"}).json()["items"]
    return sum(1 for i in items if i["method"] == "POST")


def test_a_customer_is_created_once_with_the_org_as_external_id(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    org = make_org(name="Acme Robotics", email="billing@acme.test")
    first = ensure_customer(runtime.sessions, gateway, org.id)
    again = ensure_customer(runtime.sessions, gateway, org.id)
    assert first == again == org_row(runtime, org.id).polar_customer_id
    assert customer_posts(polar_url) == 1
    customer = gateway.get_customer_external(str(org.id))
    assert customer is not None and customer.id == first
    assert (customer.email, customer.name) == ("billing@acme.test", "Acme Robotics")


def test_an_existing_customer_with_our_external_id_is_adopted(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    org = make_org()
    # A crash after Polar created it, before we stored the id: Polar answers 422 now.
    made = gateway.create_customer(email="ops@acme.test", name="Acme", external_id=str(org.id))
    assert ensure_customer(runtime.sessions, gateway, org.id) == made.id
    assert org_row(runtime, org.id).polar_customer_id == made.id


def test_an_email_taken_by_another_customer_falls_to_the_next_contact(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    other = gateway.create_customer(email="shared@acme.test", name="Other", external_id="x-1")
    org = make_org()
    with runtime.session() as s:
        row = s.get(type(org_row(runtime, org.id)), org.id)
        assert row is not None
        row.billing_emails = ["shared@acme.test", "finance@acme.test"]
    customer_id = ensure_customer(runtime.sessions, gateway, org.id)
    assert customer_id != other.id
    customer = gateway.get_customer_external(str(org.id))
    assert customer is not None and customer.email == "finance@acme.test"


def test_when_every_email_is_taken_it_says_so_and_stores_nothing(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    gateway.create_customer(email="ops@acme.test", name="Other", external_id="x-1")
    org = make_org(email="ops@acme.test")
    with pytest.raises(CustomerConflict, match="billing contact"):
        ensure_customer(runtime.sessions, gateway, org.id)
    assert org_row(runtime, org.id).polar_customer_id is None


def test_polar_down_leaves_the_org_untouched(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    org = make_org()
    with control(polar_url) as c:
        c.post("/faults", json={"kind": "status", "status": 503, "path_prefix": "/v1/customers"})
    with pytest.raises(PolarUnavailable):
        ensure_customer(runtime.sessions, gateway, org.id)
    assert org_row(runtime, org.id).polar_customer_id is None


def test_the_periodic_job_makes_customers_of_orgs_with_usage_only(
    runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str, gateway: PolarGateway
) -> None:
    idle = make_org(name="Idle", email="idle@idle.test")
    busy, _ = make_records(runtime, 3)
    assert create_missing_customers(runtime) == 0
    assert org_row(runtime, busy).polar_customer_id
    assert org_row(runtime, idle.id).polar_customer_id is None
    assert sync_missing_customers(runtime.sessions, gateway) == (0, 0)
    assert customer_posts(polar_url) == 1


class TestCheckoutEndpoint:
    @pytest.fixture
    def api(self, runtime: Runtime, polar_url: str) -> Iterator[TestClient]:
        sync_catalog(runtime)
        with TestClient(create_app(runtime)) as c:
            yield c

    def test_an_admin_gets_a_checkout_url_for_a_public_paid_plan(
        self, api: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str
    ) -> None:
        org = make_org()
        r = api.post("/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["url"].startswith(polar_url) and body["checkout_id"]
        assert org_row(runtime, org.id).plan_id == "free-tier"  # until Polar says it is paid
        with control(polar_url) as c:
            [req] = [
                i
                for i in c.get("/requests", params={"path_prefix": "/v1/checkouts"}).json()["items"]
                if i["method"] == "POST"
            ]
        assert req["status"] == 201

    @pytest.mark.parametrize(
        ("plan", "status"), [("usage-only", 422), ("free-tier", 422), ("gold", 422)]
    )
    def test_plans_that_cannot_be_bought_online_are_refused(
        self, api: TestClient, make_org: Callable[..., OrgHandle], plan: str, status: int
    ) -> None:
        org = make_org()
        r = api.post("/v1/billing/checkout", headers=org.headers, json={"plan": plan})
        assert r.status_code == status and set(r.json()) == {"error", "detail"}

    def test_members_cannot_start_a_checkout(
        self, api: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org(role=Role.MEMBER)
        r = api.post("/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"})
        assert r.status_code == 403

    def test_polar_down_is_a_503_with_nothing_changed(
        self, api: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], polar_url: str
    ) -> None:
        org = make_org()
        httpx.post(
            f"{polar_url}/_control/faults",
            json={"kind": "status", "status": 502, "path_prefix": "/v1/"},
        ).raise_for_status()
        r = api.post("/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"})
        assert r.status_code == 503 and r.json()["error"] == "polar_unavailable"
        assert org_row(runtime, org.id).polar_customer_id is None

    def test_a_polar_refusal_is_a_502_that_logs_polar_and_helps_the_customer(
        self,
        api: TestClient,
        make_org: Callable[..., OrgHandle],
        polar_url: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        org = make_org()
        httpx.post(
            f"{polar_url}/_control/faults",
            json={"kind": "status", "status": 400, "path_prefix": "/v1/checkouts"},
        ).raise_for_status()
        r = api.post("/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"})
        assert r.status_code == 502 and r.json()["error"] == "polar_error", r.text
        detail = r.json()["detail"]
        assert "Fault injected" not in detail  # Polar's own words are for the log only
        assert "nothing was charged" in detail and r.headers["x-request-id"] in detail
        assert any("Fault injected" in rec.getMessage() for rec in caplog.records)


def test_checkout_needs_billing_enabled(
    client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    r = client.post("/v1/billing/checkout", headers=org.headers, json={"plan": "base-plus-usage"})
    assert r.status_code == 409 and "Billing is not enabled" in r.json()["detail"]


def test_orgs_with_usage_and_no_customer_are_found_past_pages_of_idle_orgs(
    runtime: Runtime, make_org: Callable[..., OrgHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customers, "PAGE", 2)
    for i in range(5):
        make_org(name=f"Idle {i}")
    busy = sorted(make_records(runtime, 1)[0] for _ in range(3))
    with runtime.session() as s:
        assert customer_service.orgs_without_customer(s, limit=10) == busy
        assert customer_service.orgs_without_customer(s, limit=2) == busy[:2]
        account_service.get_org(s, busy[0]).polar_customer_id = "cus_1"
        account_service.delete_org(s, busy[1], now=runtime.clock.now(), catalog=runtime.catalog)
    with runtime.session() as s:
        assert customer_service.orgs_without_customer(s, limit=10) == busy[2:]
