"""GET /v1/billing and single heartbeats authenticate inside the request's own transaction
(`api.deps.Caller`): the refusals, their order and the answers are those of every other
organization endpoint, whether or not the token cache knows the token."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orzbob.accounts import service as accounts
from orzbob.accounts.models import ApiToken, Role
from orzbob.instances.models import Instance
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance


def _hot_calls(client: TestClient, instance_id: str, headers: dict[str, str]) -> list[object]:
    return [
        client.get("/v1/billing", headers=headers),
        client.post(
            f"/v1/instances/{instance_id}/heartbeat",
            headers=headers,
            json={"active": True, "source": "ide"},
        ),
    ]


def _instance(client: TestClient, org: OrgHandle) -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_an_org_token_is_served_twice_alike(
    cache: str, client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = _instance(client, org)
    first = _hot_calls(client, iid, org.headers)
    second = _hot_calls(client, iid, org.headers)  # from the cache when it is on
    for a, b in zip(first, second, strict=True):
        assert a.status_code == b.status_code == 200, (a.text, b.text)  # type: ignore[attr-defined]
        assert a.json() == b.json()  # type: ignore[attr-defined]
    assert first[0].json()["org_id"] == str(org.id)  # type: ignore[attr-defined]
    assert first[1].json()["last_active_source"] == "ide"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer orz_not_a_real_token"}],
)
def test_no_or_an_unknown_token_is_401(
    cache: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    headers: dict[str, str],
) -> None:
    iid = _instance(client, make_org())
    for r in _hot_calls(client, iid, headers):
        assert r.status_code == 401, r.text  # type: ignore[attr-defined]
        assert r.json()["error"] and r.json()["detail"]  # type: ignore[attr-defined]


def test_a_staff_token_is_403(
    cache: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    iid = _instance(client, make_org())
    for r in _hot_calls(client, iid, staff_headers("engineering")):
        assert r.status_code == 403, r.text  # type: ignore[attr-defined]
        assert "organization tokens" in r.json()["detail"]  # type: ignore[attr-defined]


def test_a_revoked_token_is_401_and_the_beat_writes_nothing(
    cache: str, client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = _instance(client, org)
    assert client.get("/v1/billing", headers=org.headers).status_code == 200
    with runtime.session() as s:
        token = s.scalars(select(ApiToken).where(ApiToken.org_id == org.id)).one()
        accounts.account_service.revoke_token(s, token.id, now=runtime.clock.now())
    runtime.clock.advance(60)  # type: ignore[attr-defined]
    for r in _hot_calls(client, iid, org.headers):
        assert r.status_code == 401, r.text  # type: ignore[attr-defined]
        assert "revoked" in r.json()["detail"]  # type: ignore[attr-defined]
    with runtime.session() as s:
        inst = s.get(Instance, uuid.UUID(iid))
        assert inst is not None and inst.last_seen_at < runtime.clock.now()


def test_a_nul_in_the_query_is_422_once_the_caller_is_known(
    cache: str, client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = _instance(client, org)
    for path, method in (
        ("/v1/billing?note=%00", "GET"),
        (f"/v1/instances/{iid}/heartbeat?note=%00", "POST"),
    ):
        body = {"json": {"active": True}} if method == "POST" else {}
        r = client.request(method, path, headers=org.headers, **body)  # type: ignore[arg-type]
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        r = client.request(method, path, headers={"Authorization": "Bearer orz_nobody"}, **body)  # type: ignore[arg-type]
        assert r.status_code == 401, r.text


def _billing_read_statements(
    client: TestClient, org: OrgHandle, statements: list[str], is_postgres: bool
) -> list[str]:
    """The statements of one billing read, after checking it answers as the read before it
    (SQLite's readers open their snapshot with a BEGIN of their own, left out). On
    PostgreSQL each is sent outside any transaction, and the suffix saying so is dropped."""
    expected = client.get("/v1/billing", headers=org.headers).json()
    statements.clear()
    r = client.get("/v1/billing", headers=org.headers)
    assert r.status_code == 200 and r.json() == expected
    sent = [q for q in statements if q != "BEGIN"]
    if is_postgres:
        assert all(q.endswith(" (autocommit)") for q in sent), sent
        sent = [q.removesuffix(" (autocommit)") for q in sent]
    return sent


def test_a_billing_read_is_two_statements_with_open_runs(
    cache: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    statements: list[str],
    is_postgres: bool,
) -> None:
    """The token (when the cache does not know it), the org and its open runs are one
    statement, the period's figures another; nothing else is asked of the database."""
    org = make_org()
    _instance(client, org)
    _instance(client, org)
    queries = _billing_read_statements(client, org, statements, is_postgres)
    assert len(queries) == 2, queries


def test_a_billing_read_with_usage_in_two_tiers_is_two_statements(
    cache: str,
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
    statements: list[str],
    is_postgres: bool,
) -> None:
    """The period's tier rollups come with its other figures: usage does not add a
    statement, and the figures are those of the rollups."""
    org = make_org(plan="base-plus-usage")
    small = _instance(client, org)
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "large"})
    assert r.status_code == 201, r.text
    # Each checkpoint counts up to the last beat it saw: three minutes, two of them counted.
    for _ in range(3):
        advance(with_jobs, 60)
        for iid in (small, r.json()["id"]):
            beat = client.post(
                f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True}
            )
            assert beat.status_code == 200, beat.text
    tiers = client.get("/v1/billing", headers=org.headers).json()["tiers"]
    minutes = {t["tier"]: t["minutes"] for t in tiers if t["minutes"]}
    assert minutes == {"small": 2, "large": 2}, tiers
    queries = _billing_read_statements(client, org, statements, is_postgres)
    assert len(queries) == 2, queries


def test_a_running_orgs_billing_reads_the_same_for_the_org_and_for_staff(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    """The org's own read takes its org and open runs as plain rows (the billing read
    model's head); the staff view reads them as entities: caps and upcoming caps agree."""
    org = make_org(plan="base-plus-usage", role=Role.MEMBER)
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 201, r.text
    clock = runtime.manual_clock
    assert clock is not None
    clock.advance(10 * 60)  # idle for ten minutes: the idle timeout is within the hour
    mine = client.get("/v1/billing", headers=org.headers)
    staff = client.get(f"/v1/admin/orgs/{org.id}/billing", headers=staff_headers("support_l1"))
    assert mine.status_code == staff.status_code == 200
    assert [u["cap"] for u in mine.json()["upcoming"]] == ["idle"], mine.json()["upcoming"]
    assert mine.json() == staff.json()


def test_requests_do_no_opentelemetry_work(
    client: TestClient, make_org: Callable[..., OrgHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's metrics are Prometheus's (`/metrics`); FastAPI's own OpenTelemetry
    hooks are off. On, they asked OpenTelemetry for its providers on every request (each
    time reading the environment): a twelfth of a heartbeat's Python."""
    from opentelemetry import trace

    def asked() -> None:
        raise AssertionError("a request asked OpenTelemetry for its tracer provider")

    org = make_org()
    monkeypatch.setattr(trace, "get_tracer_provider", asked)
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/billing", headers=org.headers).status_code == 200
