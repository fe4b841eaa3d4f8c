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
# One pinned reach outside the read models: a heartbeat locks its instance and reads the org
# beside it in one round trip (`instance_repository.lock_for_beat`).
PINNED = {"instances": {"accounts"}}


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
        if p.parent.name not in READ_MODELS and foreign_models(p) - PINNED.get(p.parent.name, set())
    }
    assert offenders == {}


def test_the_instances_repository_reaches_only_the_org_of_a_heartbeat() -> None:
    assert foreign_models(SRC / "instances" / "repository.py") == {"accounts"}


def test_the_throttle_read_model_reaches_no_further_than_it_does() -> None:
    assert foreign_models(SRC / "throttle" / "repository.py") == {
        "accounts",
        "instances",
        "metering",
        "quota",
    }


def test_the_billing_read_model_reaches_no_further_than_it_does() -> None:
    # accounts and instances: the head of a read (the token, the org, its open runs).
    assert foreign_models(SRC / "billing" / "repository.py") == {
        "accounts",
        "alerts",
        "instances",
        "credits",
        "metering",
        "quota",
    }


# SQL is built and run in repositories only. `kit` holds the generic pieces every repository
# uses (the base class, bulk writes, sessions, migrations); the readiness probe's `SELECT 1`
# is a liveness check of the database, not a query of any domain's tables.
SQL_BUILDERS = {"select", "update", "insert", "delete", "text", "exists", "union_all"}
RUNNERS = {"execute", "scalar", "scalars", "query", "get"}
SESSION_NAMES = {"session", "s", "conn", "connection", "db"}
SQL_ALLOWED = {"api/health.py"}
# The kit's bulk writers, which repositories wrap.
KIT_WRITERS = {"insert_ignore", "insert_ignore_pg", "upsert_add", "update_by_key", "append_rows"}


def sql_outside_repositories(path: Path) -> list[str]:
    """Where this module builds a statement or runs one on a session or connection."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            names = {a.name for a in node.names} & SQL_BUILDERS
            if names and not (node.module or "").startswith("sqlalchemy.orm"):
                found.append(f"line {node.lineno}: imports {', '.join(sorted(names))}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orzbob.kit"):
            if names := {a.name for a in node.names} & KIT_WRITERS:
                found.append(f"line {node.lineno}: imports {', '.join(sorted(names))}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RUNNERS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in SESSION_NAMES
        ):
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(…)")
    return found


def test_no_module_but_a_repository_builds_or_runs_sql() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if (
            path.name in ("repository.py", "models.py")
            or rel.startswith(("kit/", "migrations/"))
            or rel in SQL_ALLOWED
        ):
            continue
        if found := sql_outside_repositories(path):
            offenders[rel] = found
    assert offenders == {}


def test_endpoints_tasks_and_the_cli_call_services_not_repositories() -> None:
    edges = [
        p
        for p in sorted(SRC.rglob("*.py"))
        if p.name in ("endpoints.py", "tasks.py") or p.relative_to(SRC).parts[0] == "cli"
    ]
    assert len(edges) > 15
    offenders = []
    for path in edges:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(".repository"):
                offenders.append(f"{path.relative_to(SRC)}: {node.module}")
    assert offenders == []
