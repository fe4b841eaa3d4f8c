"""Golden output of `orz cloud billing` in five states, over real HTTP.

The expected text lives in tests/cli/golden/. After a deliberate change to the view, rewrite
it with `ORZ_UPDATE_GOLDEN=1 pytest tests/cli/test_billing_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.runtime import Runtime
from tests.cli.conftest import Invoke
from tests.conftest import OrgHandle, without_time_caps
from tests.quota.usage import run


@pytest.fixture
def catalog() -> Catalog:
    # States that take days of one instance's run time: the time caps are tested in
    # tests/throttle.
    return without_time_caps(default_catalog())


HOUR = 3600
GOLDEN = Path(__file__).parent / "golden"


def _state(
    name: str, client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> OrgHandle:
    if name == "within_allowance":
        org = make_org("Acme", plan="base-plus-usage")
        run(client, runtime, org, "small", 50 * HOUR)
    elif name == "at_92_percent":
        org = make_org("Acme", plan="base-plus-usage")
        run(client, runtime, org, "small", 120 * HOUR)
        run(client, runtime, org, "medium", 32 * HOUR)
    elif name == "paid_overage":
        org = make_org("Acme", plan="base-plus-usage")
        run(client, runtime, org, "small", 230 * HOUR)
        run(client, runtime, org, "medium", 20 * HOUR)
    elif name == "free_tier_exhausted":
        org = make_org("Acme", plan="free-tier")
        run(client, runtime, org, "small", 10 * HOUR)
    else:
        assert name == "spend_limit_near"
        org = make_org("Acme", plan="base-plus-usage")
        r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "25.00"})
        assert r.status_code == 200, r.text
        run(client, runtime, org, "small", 230 * HOUR)
    return org


STATES = [
    "within_allowance",
    "at_92_percent",
    "paid_overage",
    "free_tier_exhausted",
    "spend_limit_near",
]


@pytest.mark.parametrize("state", STATES)
def test_human_view_matches_golden(
    state: str,
    cli: Invoke,
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = _state(state, client, runtime, make_org)
    result = cli("cloud", org.token, "billing")
    assert result.exit_code == 0, result.output
    path = GOLDEN / f"billing_{state}.txt"
    if os.environ.get("ORZ_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(result.stdout)
    assert result.stdout == path.read_text()

    # --json is the API object unchanged, in every state.
    as_json = cli("cloud", org.token, "billing", "--json")
    assert json.loads(as_json.stdout) == client.get("/v1/billing", headers=org.headers).json()
