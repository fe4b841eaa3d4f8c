"""A month of billing rehearsed through the test-clock API."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


def test_a_month_advance_runs_every_job_and_bills_only_live_time(
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage")
    staff = staff_headers("engineering")
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    # The agent beats for 20 minutes of test time, then goes silent for a month.
    for _ in range(20):
        client.post("/v1/test-clock/advance", headers=staff, json={"seconds": 60})
        client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    r = client.post("/v1/test-clock/advance", headers=staff, json={"seconds": 30 * 86400})
    assert r.status_code == 200
    inst = client.get(f"/v1/instances/{iid}", headers=org.headers).json()
    assert (inst["state"], inst["reason"]) == ("stopped", "heartbeat_timeout")
    usage = client.get(
        "/v1/billing/usage",
        headers=org.headers,
        params={"from": "2026-03-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"},
    )
    assert usage.json()["total_minutes"] == 20
    # Idle jobs sleep through the quiet month instead of running 43,200 times each.
    assert r.json()["jobs_run"] < 100
