"""GET /v1/billing (the contract existing clients read), the staff view and the spend limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.accounts.models import Org, Role
from orzbob.audit.models import AuditEntry
from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle, without_time_caps
from tests.quota.usage import Meter, move_clock_to, run


@pytest.fixture
def catalog() -> Catalog:
    # These tests run one instance for days: the time caps are tested in tests/throttle.
    return without_time_caps(default_catalog())


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
NUMBER = (int, float)

# The fields existing clients read, with their JSON types.
CONTRACT: dict[str, type | tuple[type, ...]] = {
    "organization": str,
    "plan": str,
    "hours_used": NUMBER,
    "hours_included": NUMBER,
    "percent_used": NUMBER,
    "in_overage": bool,
    "reset_date": str,
    "estimated_bill": NUMBER,
    "daily_usage": str,
    "throttle_status": str,
}
EXTRAS = {
    "org_id",
    "plan_id",
    "period_start",
    "period_end",
    "tiers",
    "estimate",
    "credits",
    "spend_limit",
    "forecast",
    "throttles",
    "upcoming",
    "as_of",
    "last_alert",
}


def check_contract(body: dict) -> None:  # type: ignore[type-arg]
    assert set(body) == set(CONTRACT) | EXTRAS
    for name, kind in CONTRACT.items():
        value = body[name]
        assert isinstance(value, kind), (name, value)
        if kind == NUMBER:
            assert not isinstance(value, bool), name
    assert RFC3339.match(body["reset_date"]) and RFC3339.match(body["period_start"])
    assert RFC3339.match(body["as_of"])
    assert re.match(r"^\d+h \d{1,2}m$", body["daily_usage"])
    assert body["throttle_status"] in {"none", "quota_exhausted", "spend_limit", "daily_cap"}
    for t in body["tiers"]:
        assert re.match(r"^\d+\.\d\d$", t["cost"]) and isinstance(t["billable_minutes"], int)
    assert all(isinstance(v, str) for v in body["estimate"].values())
    assert all(isinstance(v, str) for v in body["credits"].values())


@pytest.mark.parametrize("plan", ["free-tier", "base-plus-usage", "usage-only"])
def test_billing_fields_and_json_types_are_the_contract(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], plan: str
) -> None:
    org = make_org("Acme", plan=plan)
    body = client.get("/v1/billing", headers=org.headers).json()
    check_contract(body)  # an org that has not run anything: zeros, no division by zero
    assert (body["hours_used"], body["percent_used"], body["daily_usage"]) == (0, 0, "0h 0m")
    run(client, runtime, org, "small", 5 * 3600 + 23 * 60)
    body = client.get("/v1/billing", headers=org.headers).json()
    check_contract(body)
    assert body["organization"] == "Acme" and body["daily_usage"] == "5h 23m"
    assert body["reset_date"] == body["period_end"] == "2026-04-10T00:00:00Z"


def test_member_tokens_read_billing_and_staff_see_the_same_object(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org(plan="base-plus-usage", role=Role.MEMBER)
    run(client, runtime, org, "medium", 7200)
    mine = client.get("/v1/billing", headers=org.headers)
    staff = client.get(f"/v1/admin/orgs/{org.id}/billing", headers=staff_headers("support_l1"))
    assert mine.status_code == staff.status_code == 200
    assert mine.json() == staff.json()


def test_other_orgs_billing_is_invisible(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme = make_org("Acme", plan="base-plus-usage")
    globex = make_org("Globex", plan="base-plus-usage")
    run(client, runtime, acme, "gpu", 3600)
    body = client.get("/v1/billing", headers=globex.headers).json()
    assert body["organization"] == "Globex" and body["hours_used"] == 0
    r = client.get(f"/v1/admin/orgs/{acme.id}/billing", headers=globex.headers)
    assert r.status_code == 403 and set(r.json()) == {"error", "detail"}
    r = client.get(
        "/v1/admin/orgs/01a21000-0000-7000-8000-000000000000/billing",
        headers=staff_headers("engineering"),
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/v1/billing", headers=staff_headers("engineering"))
    assert r.status_code == 403 and "organization tokens" in r.json()["detail"]
    assert client.get("/v1/billing").status_code == 401


def test_the_forecast_carries_the_burn_rate_to_the_period_end(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")  # period 2026-03-10 → 04-10, 31 days
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["forecast"]["projected_bill"] == "20.00"
    assert body["forecast"]["allowance_runs_out_at"] is None
    Meter(runtime, org.id).use("small", T0, 124 * 60)
    move_clock_to(runtime, datetime(2026, 3, 25, 12, tzinfo=UTC))  # half the period gone
    fc = client.get("/v1/billing", headers=org.headers).json()["forecast"]
    # 248 h by the end: 48 h over at $0.083; the 76 h left last another 9.5 days.
    assert fc["projected_hours_used"] == 248.0
    assert fc["projected_bill"] == "23.98"
    assert fc["allowance_runs_out_at"] == "2026-04-04T00:00:00Z"


def test_spend_limit_set_reported_throttles_and_cleared(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="usage-only")
    r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "5.00"})
    assert r.status_code == 200
    assert (r.json()["spend_limit"], r.json()["throttle_status"]) == ("5.00", "none")
    run(client, runtime, org, "gpu", 3 * 3600)  # $6.24 uncapped; paused at the limit
    body = client.get("/v1/billing", headers=org.headers).json()
    assert body["throttle_status"] == "spend_limit"
    # 144 gpu minutes are $4.99, the 145th reaches the limit: $5.03, and nothing after it.
    assert "$5.03" in body["throttles"][0]["detail"]
    assert body["tiers"][-1]["billable_minutes"] == 145
    body = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "50"}).json()
    assert (body["spend_limit"], body["throttle_status"]) == ("50.00", "none")
    body = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": None}).json()
    assert body["spend_limit"] is None
    with runtime.session() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(e.action, e.details, e.actor_role) for e in entries] == [
            ("spend_limit.set", {"from": None, "to": "5.00"}, "admin"),
            ("spend_limit.set", {"from": "5.00", "to": "50.00"}, "admin"),
            ("spend_limit.clear", {"from": "50.00", "to": None}, "admin"),
        ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"amount": "-5.00"}, "negative"),
        ({"amount": "5.001"}, "two decimal places"),
        ({"amount": "1e3"}, "plain amount"),
        ({"amount": "5,00"}, "plain amount"),
        ({"amount": " 5.00"}, "plain amount"),
        ({"amount": "NaN"}, "plain amount"),
        ({"amount": "0x10"}, "plain amount"),
        ({"amount": 5.5}, "not a json number"),
        ({"amount": 5}, "not a json number"),
        ({"amount": "0.00"}, "more than 0.00"),
        ({"amount": "99999999.00"}, "cannot be more than"),
        ({}, "required"),
        ({"amount": "5.00", "extra": 1}, "extra"),
    ],
)
def test_bad_spend_limits_are_a_clear_422_and_change_nothing(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    payload: dict,  # type: ignore[type-arg]
    message: str,
) -> None:
    org = make_org()
    r = client.put("/v1/billing/spend-limit", headers=org.headers, json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and message in r.json()["detail"].lower()
    with runtime.session() as s:
        assert s.get(Org, org.id).spend_limit_cents is None  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_only_org_admins_set_the_spend_limit(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    member = make_org(role=Role.MEMBER)
    r = client.put("/v1/billing/spend-limit", headers=member.headers, json={"amount": "10.00"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert "admin" in r.json()["detail"]
    r = client.put(
        "/v1/billing/spend-limit", headers=staff_headers("engineering"), json={"amount": "1.00"}
    )
    assert r.status_code == 403
    with runtime.session() as s:
        assert s.get(Org, member.id).spend_limit_cents is None  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_status_reads_rollups_not_records(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], statements: list[str]
) -> None:
    """The read path never touches usage_records (O(1) in the number of records)."""
    org = make_org(plan="base-plus-usage")
    Meter(runtime, org.id).use("small", T0, 3 * 24 * 60)
    statements.clear()
    assert client.get("/v1/billing", headers=org.headers).status_code == 200
    seen = list(statements)
    assert seen and not [s for s in seen if "usage_records" in s]
    assert len(seen) <= 12


def test_the_usage_export_explains_the_bill_and_only_for_its_own_org(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    acme = make_org("Acme", plan="base-plus-usage")
    globex = make_org("Globex", plan="base-plus-usage")
    acme_instance = run(client, runtime, acme, "large", 60 * 3600)
    run(client, runtime, globex, "small", 3600)
    bill = client.get("/v1/billing", headers=acme.headers).json()
    export = client.get("/v1/billing/usage", headers=acme.headers).json()
    assert export["total_minutes"] == sum(t["minutes"] for t in bill["tiers"])
    assert export["total_billable_minutes"] == sum(t["billable_minutes"] for t in bill["tiers"])
    assert {r["instance_id"] for r in export["records"]} == {acme_instance}
    csv = client.get("/v1/billing/usage", headers=acme.headers, params={"format": "csv"}).text
    assert csv.splitlines()[0].startswith("id,instance_id,tier,plan_id")
    assert len(csv.splitlines()) == len(export["records"]) + 1
    theirs = client.get("/v1/billing/usage", headers=globex.headers).json()
    assert acme_instance not in {r["instance_id"] for r in theirs["records"]}
    r = client.get(f"/v1/instances/{acme_instance}", headers=globex.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
