"""`orz polar sync` against the local Polar server, over real HTTP with the real SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from polar.v2026_10 import Polar
from typer.testing import CliRunner

from orzbob.catalog.service import DEFAULT_CATALOG
from orzbob.cli.main import app as cli
from orzbob.polar.sync import unit_amount
from tests.metering.polar_support import TOKEN, control, local_polar


@pytest.fixture
def polar_url(tmp_path: Path) -> Iterator[str]:
    with local_polar(tmp_path) as url:
        yield url


def orz_sync(url: str, *args: str, catalog: Path | None = None, process: bool = False) -> Ran:
    """Run `orz polar sync` in-process through the Typer app, or as a real subprocess."""
    env = {"POLAR_API_URL": url, "POLAR_API_KEY": TOKEN, "ORZBOB_CATALOG": None}
    if catalog is not None:
        env["ORZBOB_CATALOG"] = str(catalog)
    if process:
        full = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        proc = subprocess.run(
            [sys.executable, "-m", "orzbob.cli", "polar", "sync", *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return Ran(proc.stdout, proc.stderr)
    result = CliRunner().invoke(cli, ["polar", "sync", *args], env=env)
    assert result.exit_code == 0, result.output
    return Ran(result.stdout, result.stderr)


@dataclass
class Ran:
    stdout: str
    stderr: str


def ours(url: str) -> tuple[dict, dict]:
    with Polar(TOKEN, base_url=url) as p:
        meters = {m.metadata["orzbob_meter"]: m for m in p.meters.iter_list(limit=100)}
        products = {
            pr.metadata["orzbob_plan"]: pr
            for pr in p.products.iter_list(limit=100)
            if "orzbob_plan" in pr.metadata
        }
    return meters, products


def test_sync_twice_creates_everything_once_then_reports_no_changes(polar_url: str) -> None:
    first = orz_sync(polar_url)
    assert "create product base-plus-usage" in first.stdout
    second = orz_sync(polar_url, process=True)  # the real command, in its own process
    assert second.stdout.startswith("no changes")

    meters, products = ours(polar_url)
    assert sorted(meters) == ["gpu", "large", "medium", "small"]
    small = meters["small"]
    assert small.aggregation.func == "sum" and small.aggregation.property == "billable_minutes"
    clauses = {(c.property, c.operator, c.value) for c in small.filter.clauses}
    assert clauses == {("name", "eq", "orzbob.compute"), ("tier", "eq", "small")}

    assert sorted(products) == ["base-plus-usage", "free-tier", "usage-only"]
    assert {k: p.visibility for k, p in products.items()} == {
        "base-plus-usage": "public",
        "free-tier": "public",
        "usage-only": "private",
    }
    assert all(p.recurring_interval == "month" for p in products.values())
    [free] = products["free-tier"].prices
    assert (free.amount_type, free.price_amount) == ("fixed", 0)
    base = products["base-plus-usage"].prices
    assert [p.price_amount for p in base if p.amount_type == "fixed"] == [2000]
    metered = {p.meter_id: Decimal(p.unit_amount) for p in base if p.amount_type == "metered_unit"}
    assert metered == {
        meters["small"].id: Decimal("0.138333333333"),
        meters["medium"].id: Decimal("0.278333333333"),
        meters["large"].id: Decimal("0.555"),
        meters["gpu"].id: Decimal("3.466666666667"),
    }
    usage = products["usage-only"].prices
    assert {p.amount_type for p in usage} == {"metered_unit"} and len(usage) == 4


def test_dry_run_changes_nothing(polar_url: str) -> None:
    out = orz_sync(polar_url, "--dry-run").stdout
    assert "would create meter small" in out and "would create product usage-only" in out
    with control(polar_url) as c:
        stats = c.get("/stats").json()
        posts = [
            i for i in c.get("/requests", params={"path_prefix": "/v1/"}).json()["items"]
            if i["method"] != "GET"
        ]  # fmt: skip
    assert (stats["meters"], stats["products"], posts) == (0, 0, [])
    assert "create product" in orz_sync(polar_url).stdout


def changed_catalog(tmp_path: Path) -> Path:
    text = DEFAULT_CATALOG.read_text()
    text = text.replace('hourly_rate = "2.08"', 'hourly_rate = "2.50"')
    text = text.replace('name = "Usage Only"', 'name = "Pay As You Go"')
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


def test_a_changed_catalog_price_updates_prices_and_archives_the_old(
    polar_url: str, tmp_path: Path
) -> None:
    orz_sync(polar_url)
    meters_before, before = ours(polar_url)
    catalog = changed_catalog(tmp_path)

    preview = orz_sync(polar_url, "--dry-run", catalog=catalog).stdout
    assert "would update product base-plus-usage" in preview
    assert ours(polar_url)[1]["base-plus-usage"].prices == before["base-plus-usage"].prices

    out = orz_sync(polar_url, "--json", catalog=catalog).stdout
    report = json.loads(out)
    changed = {(c["action"], c["kind"], c["key"]) for c in report["changes"]}
    assert changed == {
        ("update", "product", "base-plus-usage"),
        ("update", "product", "usage-only"),
    }
    meters, after = ours(polar_url)
    assert meters == meters_before
    assert after["usage-only"].name == "Pay As You Go"
    gpu = meters["gpu"].id
    old_ids = {p.id for p in before["base-plus-usage"].prices}
    new_prices = after["base-plus-usage"].prices
    [new_gpu] = [p for p in new_prices if getattr(p, "meter_id", None) == gpu]
    assert Decimal(new_gpu.unit_amount) == unit_amount(Decimal("2.50")) == Decimal("4.166666666667")
    assert new_gpu.id not in old_ids
    # Unchanged prices keep their ids; the old gpu price is archived, not deleted.
    assert {p.id for p in new_prices} - {new_gpu.id} < old_ids
    assert len(new_prices) == 5

    assert orz_sync(polar_url, catalog=catalog).stdout.startswith("no changes")


def test_objects_we_do_not_own_are_never_touched(polar_url: str, tmp_path: Path) -> None:
    with Polar(TOKEN, base_url=polar_url) as p:
        meter = p.meters.create(
            name="Someone else's meter",
            filter={"conjunction": "and", "clauses": []},
            aggregation={"func": "count"},
        )
        product = p.products.create(
            name="Someone else's product",
            recurring_interval="month",
            prices=[{"amount_type": "fixed", "price_amount": 900}],
        )
        retired = p.products.create(
            name="Retired plan",
            recurring_interval="month",
            prices=[{"amount_type": "fixed", "price_amount": 0}],
            metadata={"orzbob_plan": "retired-plan"},
        )
    out = orz_sync(polar_url).stdout
    assert f"archive product retired-plan ({retired.id})" in out
    with Polar(TOKEN, base_url=polar_url) as p:
        assert p.meters.get(meter.id).archived_at is None
        theirs = p.products.get(product.id)
        assert not theirs.is_archived and theirs.name == "Someone else's product"
        assert p.products.get(retired.id).is_archived
    assert orz_sync(polar_url).stdout.startswith("no changes")


def test_sync_refuses_to_run_without_a_polar_key(polar_url: str) -> None:
    env = {**os.environ, "POLAR_API_URL": polar_url}
    env.pop("POLAR_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orzbob.cli", "polar", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "POLAR_API_KEY is required" in proc.stderr
