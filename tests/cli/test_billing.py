"""`orz cloud billing`, `orz cloud spend-limit` and `orz support`, over real HTTP: the app is
served by uvicorn on a free local port and the CLI talks to it like it talks to production."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from orzbob.accounts.models import Role
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.runtime import Runtime
from tests.cli.conftest import Invoke
from tests.conftest import OrgHandle, without_time_caps
from tests.orz_runner import run_orz
from tests.quota.usage import run


@pytest.fixture
def catalog() -> Catalog:
    # These tests run one instance for days: the time caps are tested in tests/throttle.
    return without_time_caps(default_catalog())


HOUR = 3600


def staff_token(staff_headers: Callable[[str], dict[str, str]], role: str) -> str:
    return staff_headers(role)["Authorization"].removeprefix("Bearer ")


def test_billing_json_is_the_api_object_verbatim(
    cli: Invoke,
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org(plan="base-plus-usage")
    run(client, runtime, org, "small", 230 * HOUR)
    run(client, runtime, org, "medium", 20 * HOUR)
    result = cli("cloud", org.token, "billing", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == client.get("/v1/billing", headers=org.headers).json()


def test_spend_limit_commands(
    cli: Invoke,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org(plan="base-plus-usage")
    result = cli("cloud", org.token, "spend-limit", "set", "50.00")
    assert result.exit_code == 0 and "Spend limit set to $50.00" in result.stdout
    assert client.get("/v1/billing", headers=org.headers).json()["spend_limit"] == "50.00"
    result = cli("cloud", org.token, "spend-limit", "set", "50.001")
    assert result.exit_code == 1 and "two decimal places" in result.stderr
    assert "Traceback" not in result.output
    result = cli("cloud", org.token, "spend-limit", "clear")
    assert result.exit_code == 0 and "removed" in result.stdout
    assert client.get("/v1/billing", headers=org.headers).json()["spend_limit"] is None
    member = make_org("Member Co", role=Role.MEMBER)
    result = cli("cloud", member.token, "spend-limit", "set", "10.00")
    assert result.exit_code == 1 and "admin" in result.stderr and "HTTP 403" in result.stderr


def test_support_credit_grant_audit_and_billing(
    cli: Invoke,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org("Acme", plan="base-plus-usage")
    l1 = staff_token(staff_headers, "support_l1")
    result = cli(
        "support", l1, "credit", "grant", "--org", str(org.id), "--amount", "25.00",
        "--reason", "outage 2026-03-03",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Granted $25.00" in result.stdout and "Polar: pending" in result.stdout
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["estimated_bill"] == 0.0 and body["credits"]["balance"] == "5.00"

    result = cli(
        "support", l1, "credit", "grant", "--org", str(org.id), "--amount", "75.00",
        "--reason", "too much for l1",
    )  # fmt: skip
    assert result.exit_code == 1 and "support_l2" in result.stderr

    result = cli("support", l1, "audit", "--org", str(org.id), "--json")
    entries = json.loads(result.stdout)["entries"]
    assert [(e["action"], e["reason"]) for e in entries] == [("credit.grant", "outage 2026-03-03")]
    out = cli("support", l1, "audit").stdout
    assert "credit.grant" in out and "amount=25.00" in out

    rows = json.loads(cli("support", l1, "credit", "list", "--org", str(org.id), "--json").stdout)
    assert [(r["amount"], r["polar_state"]) for r in rows] == [("25.00", "pending")]
    staff_view = cli("support", l1, "billing", "--org", str(org.id), "--json")
    assert json.loads(staff_view.stdout) == body
    result = cli("support", l1, "billing", "--org", "not-an-id")
    assert result.exit_code == 1 and "not a valid organization id" in result.stderr


def test_the_installed_command_end_to_end(
    api_url: str, make_org: Callable[..., OrgHandle], tmp_path: object
) -> None:
    """A separate `orz` process, as a customer runs it."""
    org = make_org(plan="usage-only")
    env = {
        **os.environ,
        "ORZ_API_URL": api_url,
        "ORZ_TOKEN": org.token,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    proc = run_orz(["cloud", "billing", "--json"], env=env)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert (body["plan_id"], body["hours_included"], body["throttle_status"]) == (
        "usage-only",
        0,
        "none",
    )
