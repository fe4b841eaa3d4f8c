"""Each domain's repository queries its own tables only (docs/architecture.md, "Repositories"):
another domain's rows are read through that domain's repository or service. Two read-only
read models read the tables of the domains they compose, and say so: the throttle's (the cap
sweep and prefilters) and the billing read model's (GET /v1/billing)."""

from __future__ import annotations

import ast
from pathlib import Path

import orzbob

SRC = Path(orzbob.__file__).parent
# The catalog is data loaded at start-up, not a table: any domain may read it.
SHARED = {"catalog"}
READ_MODELS = {"billing", "throttle"}


def foreign_models(path: Path) -> set[str]:
    """The other domains whose `models` this repository module imports."""
    own = path.parent.name
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "orzbob" and len(parts) == 3 and parts[2] == "models":
                out.add(parts[1])
    return out - {own} - SHARED


def test_repositories_query_only_their_own_domain_tables() -> None:
    repositories = sorted(SRC.glob("*/repository.py"))
    assert len(repositories) >= 10
    offenders = {
        p.parent.name: foreign_models(p)
        for p in repositories
        if p.parent.name not in READ_MODELS and foreign_models(p)
    }
    assert offenders == {}


def test_the_throttle_read_model_reaches_no_further_than_it_does() -> None:
    assert foreign_models(SRC / "throttle" / "repository.py") == {
        "accounts",
        "instances",
        "metering",
        "quota",
    }


def test_the_billing_read_model_reaches_no_further_than_it_does() -> None:
    assert foreign_models(SRC / "billing" / "repository.py") == {
        "alerts",
        "credits",
        "metering",
        "quota",
    }
