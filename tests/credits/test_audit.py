"""The audit log is append-only: readable by staff, never changed through the API or the DB."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from orzbob.audit.models import AuditEntry
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


def snapshot(runtime: Runtime) -> list[tuple[object, ...]]:
    with runtime.session() as s:
        return [
            (e.id, e.at, e.org_id, e.actor_role, e.action, e.reason, e.details)
            for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def test_grants_spend_limits_and_plan_changes_are_logged_and_filterable(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme, globex = make_org("Acme"), make_org("Globex")
    l1, l2 = staff_headers("support_l1"), staff_headers("support_l2")
    body = {"amount": "12.50", "reason": "double charge"}
    credit = client.post(f"/v1/admin/orgs/{acme.id}/credits", headers=l1, json=body).json()
    client.put("/v1/billing/spend-limit", headers=globex.headers, json={"amount": "40.00"})
    client.put(f"/v1/admin/orgs/{acme.id}/plan", headers=l2, json={"plan": "base-plus-usage"})

    page = client.get("/v1/admin/audit", headers=l1).json()
    assert [e["action"] for e in page["entries"]] == [
        "plan.change",
        "spend_limit.set",
        "credit.grant",
    ]
    grant = page["entries"][2]
    assert grant["reason"] == "double charge" and grant["actor_role"] == "support_l1"
    assert grant["details"]["credit_id"] == credit["id"] and grant["details"]["amount"] == "12.50"
    mine = client.get("/v1/admin/audit", headers=l1, params={"org": str(acme.id)}).json()
    assert [e["action"] for e in mine["entries"]] == ["plan.change", "credit.grant"]
    only = client.get("/v1/admin/audit", headers=l1, params={"action": "spend_limit.set"}).json()
    assert [e["org_id"] for e in only["entries"]] == [str(globex.id)]
    # Pages go backwards in time.
    first = client.get("/v1/admin/audit", headers=l1, params={"limit": 2}).json()
    assert len(first["entries"]) == 2 and first["next_before"] == first["entries"][1]["id"]
    rest = client.get(
        "/v1/admin/audit", headers=l1, params={"limit": 2, "before": first["next_before"]}
    ).json()
    assert [e["action"] for e in rest["entries"]] == ["credit.grant"]
    assert rest["next_before"] is None


def test_no_request_can_change_or_remove_an_entry(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org()
    eng = staff_headers("engineering")
    client.post(
        f"/v1/admin/orgs/{org.id}/credits", headers=eng, json={"amount": "1.00", "reason": "x"}
    )
    before = snapshot(runtime)
    (entry_id, *_) = before[0]
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        for path in ("/v1/admin/audit", f"/v1/admin/audit/{entry_id}"):
            r = client.request(method, path, headers=eng, json={"reason": "rewritten"})
            assert r.status_code in (404, 405), (method, path, r.status_code)
            assert set(r.json()) >= {"error", "detail"}
    # Nor can a credit be edited or withdrawn: there is no route for it.
    credit_id = before[0][6]["credit_id"]  # type: ignore[index]
    for method in ("PUT", "PATCH", "DELETE"):
        r = client.request(method, f"/v1/admin/orgs/{org.id}/credits/{credit_id}", headers=eng)
        assert r.status_code in (404, 405)
    assert snapshot(runtime) == before
    # The published API has only GET on the audit log.
    paths = client.get("/openapi.json").json()["paths"]
    audit_paths = {p: set(ops) for p, ops in paths.items() if "audit" in p}
    assert audit_paths == {"/v1/admin/audit": {"get"}}


def test_the_database_refuses_to_change_entries(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    is_postgres: bool,
) -> None:
    org = make_org()
    client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "9.00"})
    before = snapshot(runtime)
    with pytest.raises(DBAPIError, match="append-only"), runtime.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET reason = 'rewritten'"))
    if is_postgres:
        with pytest.raises(DBAPIError, match="append-only"), runtime.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    assert snapshot(runtime) == before


def test_staff_only(client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
    org = make_org()
    r = client.get("/v1/admin/audit", headers=org.headers)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.get("/v1/admin/audit").status_code == 401
