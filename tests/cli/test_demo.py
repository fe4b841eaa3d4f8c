"""`orz demo` against a running service with the test clock: five orgs in five states, all
made by real API calls and clock advances."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings
from orzbob.runtime import Runtime
from tests.cli.conftest import Invoke


@pytest.fixture
def settings(settings: Settings, smtp: SinkServer) -> Settings:
    """A mail sink, as `orz dev` runs one: the alerts the demo raises are delivered once,
    not retried against a closed port at every clock step."""
    return settings.model_copy(update={"smtp_port": smtp.port})


def test_demo_seeds_five_states_through_the_api(
    with_jobs: Runtime, api_url: str, orz_db: Invoke, client: TestClient
) -> None:
    result = orz_db("demo", "--api-url", api_url)
    assert result.exit_code == 0, result.output
    tokens = dict(re.findall(r"^  (.+?) \(.*\): (\S+)$", result.stdout, re.MULTILINE))
    assert len(tokens) == 5, result.stdout
    billing = {
        name: client.get("/v1/billing", headers={"Authorization": f"Bearer {t}"}).json()
        for name, t in tokens.items()
    }

    within = billing["Northwind Labs"]  # web-dev still runs: counted up to its last checkpoint
    assert 42.4 <= within["percent_used"] <= 42.5 and not within["in_overage"]
    assert within["throttle_status"] == "none"
    assert billing["Bluefin Studio"]["percent_used"] == 92.0
    over = billing["Copperline Data"]
    assert over["in_overage"] and over["estimated_bill"] == 26.24  # 3 gpu-hours past 200 h
    free = billing["Pebble Hobby Co"]
    assert (free["plan_id"], free["percent_used"], free["throttle_status"]) == (
        "free-tier", 100.0, "quota_exhausted",
    )  # fmt: skip
    near = billing["Lumen Analytics"]
    assert near["spend_limit"] == "24.00" and near["throttle_status"] == "none"
    assert near["estimated_bill"] == 22.08  # 92 % of the limit

    # Live-looking: an instance still runs, and nothing was stopped by a heartbeat timeout.
    headers = {"Authorization": f"Bearer {tokens['Northwind Labs']}"}
    states = {i["name"]: i["state"] for i in client.get("/v1/instances", headers=headers).json()}
    assert states == {"api-dev": "paused", "web-dev": "running"}


def test_demo_refuses_a_service_without_the_test_clock(
    orz_db: Invoke, api_url: str, runtime: Runtime
) -> None:
    runtime.settings.test_clock = False
    result = orz_db("demo", "--api-url", api_url)
    assert result.exit_code == 1 and "ORZBOB_TEST_CLOCK=true" in result.stderr
    assert "Traceback" not in result.output
