"""Authentication through the token cache: revocations take effect at once in this process
and within the cache's time to live elsewhere."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from orzbob.accounts import service as accounts
from orzbob.accounts.models import ApiToken
from orzbob.accounts.token_cache import TokenCache
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMonotonic]:
    fake = FakeMonotonic()
    monkeypatch.setattr(accounts, "token_cache", TokenCache(ttl=30.0, clock=fake))
    yield fake


def test_a_revocation_by_another_process_takes_effect_within_30_seconds(
    mono: FakeMonotonic,
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org()
    assert client.get("/v1/orgs/me", headers=org.headers).status_code == 200
    with runtime.session() as s:  # as another API process would
        s.execute(update(ApiToken).values(revoked_at=runtime.clock.now()))
    mono.now += 29
    assert client.get("/v1/orgs/me", headers=org.headers).status_code == 200
    mono.now += 2
    r = client.get("/v1/orgs/me", headers=org.headers)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_revoking_or_deleting_through_this_process_takes_effect_at_once(
    mono: FakeMonotonic,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org()
    r = client.post(
        "/v1/orgs/me/tokens", headers=org.headers, json={"role": "member", "name": "ci"}
    )
    member = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/v1/orgs/me", headers=member).status_code == 200
    engineering = staff_headers("engineering")
    assert client.get("/v1/admin/orgs", headers=engineering).status_code == 200
    assert client.delete(f"/v1/admin/orgs/{org.id}", headers=engineering).status_code == 204
    for headers in (org.headers, member):
        r = client.get("/v1/orgs/me", headers=headers)
        assert r.status_code == 401 and "no longer exists" in r.json()["detail"]


def test_entries_are_bounded_and_expire() -> None:
    fake = FakeMonotonic()
    cache: TokenCache[str] = TokenCache(ttl=30.0, max_entries=2, clock=fake)
    ids = [uuid.uuid4() for _ in range(3)]
    for i, token_id in enumerate(ids):
        cache.put(f"h{i}", f"p{i}", token_id=token_id, org_id=None)
    assert (cache.get("h0"), cache.get("h1"), cache.get("h2")) == (None, "p1", "p2")
    cache.drop_token(ids[1])
    assert cache.get("h1") is None
    fake.now += 30
    assert cache.get("h2") is None


def test_a_token_the_cache_does_not_know_reads_its_org_once(
    client: TestClient, make_org: Callable[..., OrgHandle], statements: list[str]
) -> None:
    """Authentication loads the org with the token, so the billing read that follows in the
    same transaction finds it in the session and sends no query of its own for it."""
    org = make_org(plan="base-plus-usage")
    accounts.token_cache.clear()
    statements.clear()
    assert client.get("/v1/billing", headers=org.headers).status_code == 200
    seen = [" ".join(q.split()) for q in statements]
    reads_of_orgs = [s for s in seen if re.search(r"(FROM|JOIN) \(?orgs\b", s)]
    assert len(reads_of_orgs) == 1 and "api_tokens" in reads_of_orgs[0], reads_of_orgs
