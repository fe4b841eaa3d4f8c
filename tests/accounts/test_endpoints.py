from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.conftest import OrgHandle


def test_token_reads_its_own_org(client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
    acme = make_org("Acme")
    r = client.get("/v1/orgs/me", headers=acme.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == str(acme.id)
    assert body["name"] == "Acme"
    assert body["plan"] == "free-tier"
    assert body["billing_emails"] == ["ops@acme.test"]


def test_missing_or_bad_token_is_401_with_www_authenticate(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer orz_nope"}, {"Authorization": "Basic abc"}):
        r = client.get("/v1/orgs/me", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"


def test_other_orgs_are_invisible(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme = make_org("Acme")
    globex = make_org("Globex", email="it@globex.test")
    assert client.get("/v1/orgs/me", headers=globex.headers).json()["name"] == "Globex"
    # Org tokens cannot use the staff view of another org.
    r = client.get(f"/v1/admin/orgs/{acme.id}", headers=globex.headers)
    assert r.status_code == 403
    staff = staff_headers("support_l1")
    assert client.get(f"/v1/admin/orgs/{acme.id}", headers=staff).json()["name"] == "Acme"


def test_token_of_a_deleted_org_is_refused(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme = make_org()
    eng = staff_headers("engineering")
    assert client.delete(f"/v1/admin/orgs/{acme.id}", headers=eng).status_code == 204
    r = client.get("/v1/orgs/me", headers=acme.headers)
    assert r.status_code == 401
    assert "no longer exists" in r.json()["detail"]
    assert client.get(f"/v1/admin/orgs/{acme.id}", headers=eng).status_code == 404


def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    eng = staff_headers("engineering")
    before = client.get("/v1/admin/orgs", headers=eng).json()
    r = client.post(
        "/v1/admin/orgs", headers={**eng, "content-type": "application/json"}, content=b"{nope"
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/v1/admin/orgs", headers=eng, json={"name": "X", "billing_emails": ["x"]})
    assert r.status_code == 422 and "e-mail" in r.json()["detail"]
    r = client.post(
        "/v1/admin/orgs",
        headers=eng,
        json={"name": "X", "billing_emails": ["a@b.test"], "plan": "gold"},
    )
    assert r.status_code == 422 and "Unknown plan 'gold'" in r.json()["detail"]
    r = client.post("/v1/admin/orgs", headers=eng, json={"name": 5, "billing_emails": "a@b.test"})
    assert r.status_code == 422
    r = client.post(
        "/v1/admin/orgs",
        headers=eng,
        json={"name": "X" * 2_000_000, "billing_emails": ["a@b.test"]},
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert client.get("/v1/admin/orgs", headers=eng).json() == before

    acme = make_org()
    r = client.post("/v1/orgs/me/tokens", headers=acme.headers, json={"role": "superuser"})
    assert r.status_code == 422 and "member, admin" in r.json()["detail"]
    r = client.post("/v1/orgs/me/tokens", headers=acme.headers, json={"role": "engineering"})
    assert r.status_code == 422


def test_roles(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme = make_org()
    r = client.post("/v1/orgs/me/tokens", headers=acme.headers, json={"role": "member"})
    assert r.status_code == 201
    member = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/v1/orgs/me", headers=member).status_code == 200
    r = client.patch("/v1/orgs/me", headers=member, json={"name": "Evil"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    r = client.patch("/v1/orgs/me", headers=acme.headers, json={"name": "Acme Inc"})
    assert r.status_code == 200 and r.json()["name"] == "Acme Inc"
    # Staff endpoints refuse org tokens and too-junior staff.
    assert client.get("/v1/admin/orgs", headers=acme.headers).status_code == 403
    l1 = staff_headers("support_l1")
    r = client.post(
        "/v1/admin/orgs", headers=l1, json={"name": "X", "billing_emails": ["a@b.test"]}
    )
    assert r.status_code == 403
    r = client.put(f"/v1/admin/orgs/{acme.id}/plan", headers=l1, json={"plan": "usage-only"})
    assert r.status_code == 403
    l2 = staff_headers("support_l2")
    r = client.put(f"/v1/admin/orgs/{acme.id}/plan", headers=l2, json={"plan": "usage-only"})
    assert r.status_code == 200 and r.json()["plan"] == "usage-only"


def test_tokens_are_stored_hashed(
    client: TestClient, make_org: Callable[..., OrgHandle], runtime
) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    acme = make_org()
    with runtime.engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text("SELECT token_hash FROM api_tokens"))]
    assert acme.token not in stored
    assert all(len(h) == 64 for h in stored)


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    assert "billing" in r.json()["checks"]
    assert client.get("/openapi.json").json()["info"]["title"] == "Orzbob Cloud Billing"
    assert "orzbob_usage_meter_queue" in client.get("/metrics").text
    r = client.get("/no/such/path")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_creating_an_org_returns_its_first_admin_token_once(
    client: TestClient, staff_headers: Callable[[str], dict[str, str]]
) -> None:
    eng = staff_headers("engineering")
    r = client.post(
        "/v1/admin/orgs", headers=eng, json={"name": "Initech", "billing_emails": ["a@b.test"]}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    admin = {"Authorization": f"Bearer {body['token']}"}
    me = client.get("/v1/orgs/me", headers=admin).json()
    assert (me["id"], me["name"], me["plan"]) == (body["id"], "Initech", "free-tier")
    # Only admins may issue tokens: the first token is an admin's.
    r = client.post("/v1/orgs/me/tokens", headers=admin, json={"role": "member", "name": "ci"})
    assert r.status_code == 201
    again = client.get(f"/v1/admin/orgs/{body['id']}", headers=eng).json()
    assert "token" not in again
    r = client.post(
        "/v1/admin/orgs",
        headers=staff_headers("support_l2"),
        json={"name": "X", "billing_emails": ["a@b.test"]},
    )
    assert r.status_code == 403
