"""Loading the catalog data file."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from orzbob.catalog.models import Catalog
from orzbob.kit.errors import ConfigError

DEFAULT_CATALOG = Path(__file__).with_name("catalog.toml")


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the catalog; any problem is a ConfigError naming the file and field."""
    path = path or DEFAULT_CATALOG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"catalog file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"catalog file {path} is not valid TOML: {exc}") from None
    data = {
        "tiers": raw.get("tiers", []),
        "plans": raw.get("plans", []),
        "default_plan": raw.get("defaults", {}).get("plan", "free-tier"),
    }
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"catalog file {path} is invalid: {problems}") from None


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return load_catalog()
