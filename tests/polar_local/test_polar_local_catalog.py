"""Meters and products through the real SDK over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from polar.v2026_10.errors import HTTPValidationError, ResourceNotFound
from polar.v2026_10.outputs import ProductPriceFixed, ProductPriceMeteredUnit

from tests.polar_local.polar_local_support import LocalPolar, local_polar, make_catalog

NAME_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "instance.minutes"}],
}


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LocalPolar]:
    with local_polar(tmp_path / "polar.db") as server:
        yield server


def test_meter_create_get_list_update(lp: LocalPolar) -> None:
    created = lp.polar.meters.create(
        name="Instance minutes",
        filter=NAME_FILTER,
        aggregation={"func": "sum", "property": "minutes"},
        metadata={"tier": "small"},
    )
    lp.polar.meters.create(name="Builds", filter=NAME_FILTER, aggregation={"func": "count"})

    fetched = lp.polar.meters.get(created.id)
    renamed = lp.polar.meters.update(created.id, name="Small minutes")
    archived = lp.polar.meters.update(created.id, is_archived=True)
    active = lp.polar.meters.list(is_archived=False)
    found = lp.polar.meters.list(query="small")
    by_meta = lp.polar.meters.list(metadata={"tier": "small"})

    assert fetched.filter.clauses[0].value == "instance.minutes"
    assert fetched.aggregation.func == "sum"
    assert renamed.name == "Small minutes" and renamed.modified_at is not None
    assert archived.archived_at is not None
    assert [m.name for m in active.items] == ["Builds"]
    assert [m.id for m in found.items] == [created.id]
    assert [m.id for m in by_meta.items] == [created.id]


def test_meter_validation_and_unknown_meter(lp: LocalPolar) -> None:
    with pytest.raises(HTTPValidationError) as short:
        lp.polar.meters.create(name="ab", filter=NAME_FILTER, aggregation={"func": "count"})
    with pytest.raises(HTTPValidationError) as org:
        lp.polar.meters.create(
            name="Minutes",
            filter=NAME_FILTER,
            aggregation={"func": "count"},
            organization_id="5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10",
        )
    with pytest.raises(ResourceNotFound):
        lp.polar.meters.get("5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10")

    assert short.value.error.detail[0].loc == ["body", "name"]
    assert org.value.error.detail[0].loc == ["body", "organization_id"]
    assert org.value.error.detail[0].type == "organization_token"


def test_meter_quantities_sum_matching_events(lp: LocalPolar) -> None:
    meter_id, _ = make_catalog(lp)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = day - timedelta(days=1)
    lp.polar.events.ingest(
        events=[
            {
                "name": "instance.minutes",
                "external_customer_id": "a",
                "external_id": "1",
                "timestamp": (yesterday + timedelta(hours=1)).isoformat(),
                "metadata": {"minutes": 10},
            },
            {
                "name": "instance.minutes",
                "external_customer_id": "b",
                "external_id": "2",
                "timestamp": (yesterday + timedelta(hours=2)).isoformat(),
                "metadata": {"minutes": 5},
            },
            {
                "name": "instance.minutes",
                "external_customer_id": "a",
                "external_id": "3",
                "timestamp": day.isoformat(),
                "metadata": {"minutes": 2.5},
            },
            {
                "name": "other",
                "external_customer_id": "a",
                "external_id": "4",
                "timestamp": day.isoformat(),
                "metadata": {"minutes": 100},
            },
        ]
    )

    everyone = lp.polar.meters.quantities(
        meter_id,
        start_timestamp=yesterday.isoformat(),
        end_timestamp=day.isoformat(),
        interval="day",
    )
    only_a = lp.polar.meters.quantities(
        meter_id,
        start_timestamp=yesterday.isoformat(),
        end_timestamp=day.isoformat(),
        interval="day",
        external_customer_id="a",
    )

    assert [q.quantity for q in everyone.quantities] == [15.0, 2.5]
    assert everyone.total == 17.5
    assert [datetime.fromisoformat(q.timestamp) for q in everyone.quantities] == [yesterday, day]
    assert only_a.total == 12.5


def test_product_with_fixed_and_metered_prices(lp: LocalPolar) -> None:
    meter_id, product_id = make_catalog(lp)

    product = lp.polar.products.get(product_id)
    fixed, metered = product.prices

    assert product.is_recurring and product.recurring_interval == "month"
    assert isinstance(fixed, ProductPriceFixed) and fixed.price_amount == 2000
    assert isinstance(metered, ProductPriceMeteredUnit)
    assert metered.meter_id == meter_id and metered.meter.name == "Instance minutes"
    assert isinstance(metered.unit_amount, str)
    assert Decimal(metered.unit_amount) == Decimal("0.05")


def test_product_update_keeps_referenced_prices_and_archives_the_rest(lp: LocalPolar) -> None:
    meter_id, product_id = make_catalog(lp)
    fixed, metered = lp.polar.products.get(product_id).prices

    updated = lp.polar.products.update(
        product_id,
        name="Pro plan 2026",
        description="Two hundred hours included",
        prices=[
            {"id": fixed.id},
            {"amount_type": "metered_unit", "meter_id": meter_id, "unit_amount": 0.07},
        ],
        metadata={"plan": "pro", "rev": 2},
    )
    archived = lp.polar.products.update(product_id, is_archived=True)

    kept, new = updated.prices
    assert kept.id == fixed.id
    assert isinstance(new, ProductPriceMeteredUnit) and new.id != metered.id
    assert Decimal(new.unit_amount) == Decimal("0.07")
    assert updated.name == "Pro plan 2026" and updated.metadata == {"plan": "pro", "rev": 2}
    assert archived.is_archived
    assert lp.polar.products.list(is_archived=False).items == []


def test_product_list_filters(lp: LocalPolar) -> None:
    make_catalog(lp)
    lp.polar.products.create(
        name="Free tier",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 0}],
        visibility="private",
        metadata={"plan": "free"},
    )

    by_meta = lp.polar.products.list(metadata={"plan": "free"})
    private = lp.polar.products.list(visibility=["private"])
    by_name = lp.polar.products.list(query="pro")
    all_products = list(lp.polar.products.iter_list(limit=1))

    assert [p.name for p in by_meta.items] == ["Free tier"]
    assert [p.name for p in private.items] == ["Free tier"]
    assert [p.name for p in by_name.items] == ["Pro plan"]
    assert sorted(p.name for p in all_products) == ["Free tier", "Pro plan"]


@pytest.mark.parametrize(
    ("prices", "loc"),
    [
        (
            [
                {"amount_type": "fixed", "price_amount": 0},
                {"amount_type": "fixed", "price_amount": 900},
            ],
            ["body", "prices"],
        ),
        (
            [{"amount_type": "custom"}, {"amount_type": "fixed", "price_amount": 900}],
            ["body", "prices"],
        ),
        ([{"amount_type": "fixed", "price_amount": 10}], ["body", "prices", 0, "price_amount"]),
        (
            [
                {
                    "amount_type": "metered_unit",
                    "meter_id": "5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10",
                    "unit_amount": "0.05",
                }
            ],
            ["body", "prices", 0, "meter_id"],
        ),
        (
            [
                {
                    "amount_type": "metered_unit",
                    "meter_id": "5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10",
                    "unit_amount": "0",
                }
            ],
            ["body", "prices", 0, "metered_unit", "unit_amount"],
        ),
    ],
)
def test_product_price_rules(lp: LocalPolar, prices: list[dict], loc: list) -> None:
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.products.create(name="Broken", recurring_interval="month", prices=prices)

    assert err.value.error.detail[0].loc == loc
    assert lp.polar.products.list().items == []


def test_metered_prices_need_a_recurring_product(lp: LocalPolar) -> None:
    meter_id, _ = make_catalog(lp)

    with pytest.raises(HTTPValidationError) as err:
        lp.polar.products.create(
            name="One-off",
            prices=[{"amount_type": "metered_unit", "meter_id": meter_id, "unit_amount": "1"}],
        )

    assert err.value.error.detail[0].msg == "Metered prices are only allowed on recurring products."
