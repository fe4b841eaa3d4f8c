"""docs/pricing.md: every worked example is recomputed by the service, and the page's rates
and plans are the catalog's."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, without_time_caps
from tests.docs.runbook_commands import blocks
from tests.quota.usage import run

PRICING = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"
UNIT = {"hours": 3600, "minutes": 60, "seconds": 1}


def examples() -> list[dict[str, Any]]:
    found = [yaml.safe_load(b) for b in blocks(PRICING.read_text(), "yaml")]
    return [e for e in found if isinstance(e, dict) and "expect" in e]


@pytest.fixture
def catalog() -> Catalog:
    # The examples run one instance for days; the time caps are not what they illustrate.
    return without_time_caps(default_catalog())


def test_the_page_has_its_worked_examples() -> None:
    assert len(examples()) >= 6


@pytest.mark.parametrize("example", examples(), ids=lambda e: e["expect"]["total"])
def test_worked_example_is_what_the_service_bills(
    example: dict[str, Any],
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan=example["plan"])
    if "credit" in example:
        r = client.post(
            f"/v1/admin/orgs/{org.id}/credits",
            json={"amount": example["credit"], "reason": "pricing example"},
            headers=staff_headers("engineering"),
        )
        assert r.status_code == 201, r.text
    for step in example["usage"]:
        [(unit, amount)] = [(k, v) for k, v in step.items() if k in UNIT]
        run(client, runtime, org, step["tier"], amount * UNIT[unit])
    body = client.get("/v1/billing", headers=org.headers).json()
    expect = example["expect"]
    assert body["hours_used"] == pytest.approx(expect["hours_used"])
    assert body["percent_used"] == pytest.approx(expect["percent_used"])
    assert body["in_overage"] is expect["in_overage"]
    lines = {t["tier"]: t["cost"] for t in body["tiers"] if t["tier"] in expect["lines"]}
    assert lines == expect["lines"]
    assert body["estimate"]["total"] == expect["total"]


def test_the_rates_and_plans_on_the_page_are_the_catalogs() -> None:
    text = PRICING.read_text()
    catalog = default_catalog()
    for tier in catalog.tiers:
        row = re.search(rf"^\| `{tier.id}` \| \$([\d.]+) \| (\d+) \|", text, re.M)
        assert row, tier.id
        assert Decimal(row.group(1)) == tier.hourly_rate
    for plan in catalog.plans:
        assert f"`{plan.id}`" in text
    assert "## FAQ" in text and "**Starts at $20/mo incl. 200 h**".lower() in text.lower()
