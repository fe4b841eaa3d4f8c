"""Hostile input found in review: each case is a clear 4xx with the error body, never a 500,
and nothing is written on a refusal (issue: proof under hostile input)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.accounts.models import Org
from orzbob.api.app import create_app
from orzbob.polar.models import WebhookDelivery
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.polar.support import signed_headers, use_billing

NUL = "bad\u0000name"


def assert_error(r, status: int) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert {"error", "detail"} <= set(body) and body["detail"], body


def count_orgs(runtime: Runtime) -> int:
    with runtime.session() as s:
        return s.scalar(select(func.count()).select_from(Org)) or 0


class TestUsageExportDates:
    @pytest.mark.parametrize(
        "params",
        [
            {"from": "0001-01-01T00:00:00+14:00"},
            {"to": "9999-12-31T23:59:59-14:00"},
            {"from": "0001-01-01T00:00:00+14:00", "to": "9999-12-31T23:59:59-14:00"},
        ],
    )
    def test_dates_that_overflow_in_utc_are_422(
        self, client: TestClient, make_org: Callable[..., OrgHandle], params: dict[str, str]
    ) -> None:
        member = make_org()
        r = client.get("/v1/billing/usage", headers=member.headers, params=params)
        assert_error(r, 422)
        assert "range" in r.json()["detail"] or "supported" in r.json()["detail"]


class TestIntegerBounds:
    @pytest.mark.parametrize("offset", ["9223372036854775808", "2147483648", "10000001"])
    def test_a_huge_offset_is_422(
        self, client: TestClient, staff_headers: Callable[[str], dict[str, str]], offset: str
    ) -> None:
        r = client.get(
            "/v1/admin/orgs", headers=staff_headers("engineering"), params={"offset": offset}
        )
        assert_error(r, 422)

    def test_a_large_offset_within_bounds_is_an_empty_page(
        self, client: TestClient, staff_headers: Callable[[str], dict[str, str]]
    ) -> None:
        r = client.get(
            "/v1/admin/orgs", headers=staff_headers("engineering"), params={"offset": "1000000"}
        )
        assert r.status_code == 200 and r.json() == []


class TestNulBytes:
    def test_instance_name(self, client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
        org = make_org()
        r = client.post("/v1/instances", headers=org.headers, json={"tier": "small", "name": NUL})
        assert_error(r, 422)
        assert client.get("/v1/instances", headers=org.headers).json() == []

    def test_org_name_on_patch(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        assert_error(client.patch("/v1/orgs/me", headers=org.headers, json={"name": NUL}), 422)
        assert client.get("/v1/orgs/me", headers=org.headers).json()["name"] == "Acme"

    def test_org_name_and_email_on_admin_create(
        self, client: TestClient, runtime: Runtime, staff_headers: Callable[[str], dict[str, str]]
    ) -> None:
        eng = staff_headers("engineering")
        for body in (
            {"name": NUL, "billing_emails": ["ops@x.test"]},
            {"name": "X", "billing_emails": ["o\u0000ps@x.test"]},
        ):
            assert_error(client.post("/v1/admin/orgs", headers=eng, json=body), 422)
        assert count_orgs(runtime) == 0

    def test_token_name(self, client: TestClient, make_org: Callable[..., OrgHandle]) -> None:
        org = make_org()
        r = client.post(
            "/v1/orgs/me/tokens", headers=org.headers, json={"role": "member", "name": NUL}
        )
        assert_error(r, 422)

    def test_credit_reason(
        self,
        client: TestClient,
        make_org: Callable[..., OrgHandle],
        staff_headers: Callable[[str], dict[str, str]],
    ) -> None:
        org = make_org()
        r = client.post(
            f"/v1/admin/orgs/{org.id}/credits",
            headers=staff_headers("support_l2"),
            json={"amount": "5.00", "reason": NUL},
        )
        assert_error(r, 422)

    def test_audit_action_filter(
        self, client: TestClient, staff_headers: Callable[[str], dict[str, str]]
    ) -> None:
        r = client.get(
            "/v1/admin/audit", headers=staff_headers("engineering"), params={"action": NUL}
        )
        assert_error(r, 422)

    def test_an_escaped_backslash_is_not_a_nul(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        body = b'{"name": "Acme \\\\u0000 Inc"}'  # the text `Acme \u0000 Inc`, six characters
        r = client.patch(
            "/v1/orgs/me", headers={**org.headers, "content-type": "application/json"}, content=body
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "Acme \\u0000 Inc"


class TestMoneyAmounts:
    @pytest.mark.parametrize("amount", ["5.00\n", "5\n", "5.00\r\n"])
    def test_a_trailing_newline_is_refused_for_credits(
        self,
        client: TestClient,
        make_org: Callable[..., OrgHandle],
        staff_headers: Callable[[str], dict[str, str]],
        amount: str,
    ) -> None:
        org = make_org()
        r = client.post(
            f"/v1/admin/orgs/{org.id}/credits",
            headers=staff_headers("support_l2"),
            json={"amount": amount, "reason": "goodwill"},
        )
        assert_error(r, 422)

    @pytest.mark.parametrize("amount", ["5.00\n", "50\n"])
    def test_a_trailing_newline_is_refused_for_the_spend_limit(
        self, client: TestClient, make_org: Callable[..., OrgHandle], amount: str
    ) -> None:
        org = make_org()
        r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": amount})
        assert_error(r, 422)
        assert client.get("/v1/orgs/me", headers=org.headers).json()["spend_limit"] is None


class TestSmallerOnes:
    @pytest.mark.parametrize("name", ["   ", "\t\n", ""])
    def test_a_blank_org_name_is_refused(
        self, client: TestClient, make_org: Callable[..., OrgHandle], name: str
    ) -> None:
        org = make_org()
        assert_error(client.patch("/v1/orgs/me", headers=org.headers, json={"name": name}), 422)
        assert client.get("/v1/orgs/me", headers=org.headers).json()["name"] == "Acme"

    def test_an_org_name_is_stored_trimmed(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        r = client.patch("/v1/orgs/me", headers=org.headers, json={"name": "  Acme Inc "})
        assert r.status_code == 200 and r.json()["name"] == "Acme Inc"

    @pytest.mark.parametrize("seconds", ["60", True, 60.0, "1e2"])
    def test_the_test_clock_wants_a_json_integer(
        self, client: TestClient, staff_headers: Callable[[str], dict[str, str]], seconds: object
    ) -> None:
        eng = staff_headers("engineering")
        before = client.get("/v1/test-clock", headers=eng).json()["now"]
        r = client.post("/v1/test-clock/advance", headers=eng, json={"seconds": seconds})
        assert_error(r, 422)
        assert client.get("/v1/test-clock", headers=eng).json()["now"] == before

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("post", "/v1/instances"),
            ("patch", "/v1/orgs/me"),
            ("put", "/v1/billing/spend-limit"),
            ("post", "/v1/admin/orgs"),
            ("post", "/v1/test-clock/advance"),
        ],
    )
    @pytest.mark.parametrize("auth", [None, "Bearer orz_not_a_real_token"])
    def test_an_anonymous_malformed_body_is_401(
        self, client: TestClient, method: str, path: str, auth: str | None
    ) -> None:
        headers = {"content-type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        r = client.request(method, path, content=b"{not json", headers=headers)
        assert_error(r, 401)
        r = client.request(method, path, content=b'{"name": "a\\u0000"}', headers=headers)
        assert_error(r, 401)

    def test_an_authenticated_malformed_body_is_still_422(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        r = client.post(
            "/v1/instances",
            content=b"{not json",
            headers={**org.headers, "content-type": "application/json"},
        )
        assert_error(r, 422)


@pytest.fixture
def hooks(runtime: Runtime) -> Iterator[TestClient]:
    use_billing(runtime, "http://127.0.0.1:9")
    with TestClient(create_app(runtime)) as c:
        yield c


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.session() as s:
        return list(s.scalars(select(WebhookDelivery)))


class TestWebhookPayloads:
    @pytest.mark.parametrize(
        "body",
        [
            b"[" * 1000 + b"]" * 1000,
            b'{"type": "subscription.active", "data": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001,
            b'{"type": "subscription.active", "data": {"amount": NaN}}',
            b'{"type": "subscription.active", "data": {"amount": Infinity}}',
            b'{"type": "subscription.\\u0000active", "data": {}}',
            b'{"type": "subscription.active", "data": {"id": "sub\\u0000"}}',
            b'{"type": "subscription.active", "data": {"k\\u0000": 1}}',
            b'{"type": "subscription.active"',
        ],
    )
    def test_a_signed_payload_that_parses_badly_is_a_recorded_400(
        self, hooks: TestClient, runtime: Runtime, body: bytes
    ) -> None:
        headers = signed_headers(body, webhook_id="evt_bad")
        r = hooks.post("/v1/webhooks/polar", content=body, headers=headers)
        assert_error(r, 400)
        rows = deliveries(runtime)
        assert [(d.id, d.status) for d in rows] == [("evt_bad", "rejected")]
        assert rows[0].error

    def test_the_same_bad_delivery_twice_is_recorded_once(
        self, hooks: TestClient, runtime: Runtime
    ) -> None:
        body = b'{"type": "x", "data": {"n": NaN}}'
        for _ in range(2):
            r = hooks.post(
                "/v1/webhooks/polar", content=body, headers=signed_headers(body, webhook_id="evt_2")
            )
            assert_error(r, 400)
        assert [d.status for d in deliveries(runtime)] == ["rejected"]

    def test_a_sane_payload_still_works(self, hooks: TestClient, runtime: Runtime) -> None:
        body = json.dumps({"type": "customer.created", "data": {"id": "c"}}).encode()
        r = hooks.post("/v1/webhooks/polar", content=body, headers=signed_headers(body))
        assert r.status_code == 200 and r.json()["status"] == "ignored"


class TestBodiesThatAreNotText:
    def test_a_body_that_is_not_utf8_is_422_for_a_caller_and_401_for_nobody(
        self, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        org = make_org()
        headers = {"content-type": "application/json"}
        r = client.patch("/v1/orgs/me", content=b"\xff1", headers={**headers, **org.headers})
        assert_error(r, 422)
        assert_error(client.patch("/v1/orgs/me", content=b"\xff1", headers=headers), 401)
