from decimal import Decimal
from pathlib import Path

import pytest

from orzbob.catalog.service import DEFAULT_CATALOG, load_catalog
from orzbob.kit.errors import ConfigError


def test_the_shipped_catalog_matches_the_spec() -> None:
    c = load_catalog()
    assert c.plan_ids == ["free-tier", "base-plus-usage", "usage-only"]
    base = c.plan("base-plus-usage")
    assert base.monthly_base == Decimal("20.00")
    assert base.included_small_minutes == 200 * 60
    assert c.plan("usage-only").visibility == "private"
    assert c.plan("free-tier").tiers == ("small",)
    assert c.plan("free-tier").after_allowance == "hard_stop"
    assert c.tier("gpu").small_hour_weight == 25
    assert c.tier("gpu").hourly_rate == Decimal("2.08")
    assert c.tier("medium").resources == "4 vCPU, 8 GiB"
    assert c.default_plan == "free-tier"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "catalog.toml"
    text = DEFAULT_CATALOG.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('tiers = ["small"]', 'tiers = ["tiny"]', "unknown tier"),
        ('hourly_rate = "0.083"', 'hourly_rate = "-0.083"', "hourly_rate"),
        ('id = "usage-only"', 'id = "free-tier"', "duplicate plan id"),
        ('id = "medium"', 'id = "small"', "duplicate tier id"),
        ('hourly_rate = "0.083"', "hourly_rate = 0.083", "float"),
        ('plan = "free-tier"', 'plan = "gold"', "default plan"),
    ],
)
def test_invalid_catalogs_are_refused_with_a_clear_message(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_catalog(_broken(tmp_path, old, new))


def test_unparseable_catalog(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[plans]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalog(path)
