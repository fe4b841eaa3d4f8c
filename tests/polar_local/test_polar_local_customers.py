"""Customers, customer sessions and checkouts through the real SDK over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from polar.v2026_10.errors import HTTPValidationError, ResourceNotFound
from polar.v2026_10.outputs import CustomerIndividual

from tests.polar_local.polar_local_support import LocalPolar, local_polar, make_catalog


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LocalPolar]:
    with local_polar(tmp_path / "polar.db") as server:
        yield server


def test_create_and_read_back(lp: LocalPolar) -> None:
    created = lp.polar.customers.create(
        email="ops@orzbob.dev",
        external_id="org_1",
        name="Acme",
        metadata={"plan": "pro"},
        billing_address={"country": "FR", "city": "Paris"},
    )

    by_id = lp.polar.customers.get(created.id)
    by_ext = lp.polar.customers.get_external("org_1")
    listed = lp.polar.customers.list(email="OPS@orzbob.dev")

    assert isinstance(created, CustomerIndividual)
    assert by_id == created == by_ext
    assert created.billing_address is not None and created.billing_address.country == "FR"
    assert [c.id for c in listed.items] == [created.id]


def test_duplicate_email_or_external_id_is_a_422(lp: LocalPolar) -> None:
    lp.polar.customers.create(email="ops@orzbob.dev", external_id="org_1")

    with pytest.raises(HTTPValidationError) as email:
        lp.polar.customers.create(email="OPS@orzbob.dev", external_id="org_2")
    with pytest.raises(HTTPValidationError) as ext:
        lp.polar.customers.create(email="other@orzbob.dev", external_id="org_1")

    (e1,) = email.value.error.detail
    (e2,) = ext.value.error.detail
    assert (e1.loc, e1.msg) == (
        ["body", "email"],
        "A customer with this email address already exists.",
    )
    assert (e2.loc, e2.msg) == (
        ["body", "external_id"],
        "A customer with this external ID already exists.",
    )
    assert lp.polar.customers.list().pagination.total_count == 1


def test_update_by_external_id_and_by_id(lp: LocalPolar) -> None:
    customer = lp.polar.customers.create(email="ops@orzbob.dev")

    linked = lp.polar.customers.update(customer.id, external_id="org_7")
    renamed = lp.polar.customers.update_external("org_7", name="Acme Ltd", metadata={"seats": 3})
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.customers.update(customer.id, external_id="org_8")

    assert linked.external_id == "org_7"
    assert renamed.name == "Acme Ltd" and renamed.metadata == {"seats": 3}
    assert renamed.modified_at is not None
    assert err.value.error.detail[0].loc == ["body", "external_id"]


def test_delete_by_external_id_revokes_subscriptions(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    lp.polar.customers.create(email="gone@orzbob.dev", external_id="org_gone")
    sub = lp.control(
        "POST",
        "/subscriptions",
        json={"external_customer_id": "org_gone", "product_id": product_id},
    )

    assert lp.polar.customers.delete_external("org_gone") is None
    raw = httpx.delete(
        f"{lp.url}/v1/customers/external/org_gone", headers={"Authorization": "Bearer polar_oat_x"}
    )
    with pytest.raises(ResourceNotFound):
        lp.polar.customers.get_external("org_gone")

    assert raw.status_code == 404
    assert raw.json() == {"error": "ResourceNotFound", "detail": "Not found"}
    assert lp.polar.subscriptions.get(sub["id"]).status == "canceled"
    # The external id is free again, as on Polar.
    assert lp.polar.customers.create(email="back@orzbob.dev", external_id="org_gone").id


def test_delete_answers_204(lp: LocalPolar) -> None:
    customer = lp.polar.customers.create(email="x@orzbob.dev")

    response = lp.http.delete(
        f"/v1/customers/{customer.id}", headers={"Authorization": "Bearer polar_oat_x"}
    )

    assert response.status_code == 204
    assert response.content == b""


def test_customer_session_and_checkout(lp: LocalPolar) -> None:
    _, product_id = make_catalog(lp)
    customer = lp.polar.customers.create(email="buyer@orzbob.dev", external_id="org_buy")

    session = lp.polar.customer_sessions.create(external_customer_id="org_buy")
    checkout = lp.polar.checkouts.create(
        products=[product_id],
        external_customer_id="org_buy",
        success_url="https://app.orzbob.dev/done?c={CHECKOUT_ID}",
    )
    subscription = lp.control("POST", f"/checkouts/{checkout.id}/complete")

    assert session.customer_id == customer.id
    assert session.customer_portal_url.startswith(lp.url)
    assert checkout.status == "open" and checkout.amount == 2000
    assert checkout.success_url == f"https://app.orzbob.dev/done?c={checkout.id}"
    assert checkout.url.startswith(lp.url)
    assert subscription["checkout_id"] == checkout.id
    assert subscription["customer_id"] == customer.id
    assert [s.id for s in lp.polar.subscriptions.list(external_customer_id="org_buy").items] == [
        subscription["id"]
    ]


def test_checkout_for_unknown_product_is_a_422(lp: LocalPolar) -> None:
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.checkouts.create(products=["5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10"])

    assert err.value.error.detail[0].loc == ["body", "products", 0]
