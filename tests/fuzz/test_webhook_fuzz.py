"""Fuzzing the Polar webhook receiver: random headers and bodies, stale, future and garbage
timestamps, tampered signatures, replays and oversized bodies. Only a valid signature gets a
2xx, and nothing changes without one. `ORZBOB_FUZZ_EXAMPLES` scales the example counts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from orzbob.api.app import create_app
from orzbob.polar.models import WebhookDelivery
from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle
from tests.polar.support import envelope, org_row, signed_headers, subscription, use_billing

URL = "/v1/webhooks/polar"


def fuzz_settings(scale: float = 1.0) -> Any:
    return settings(
        max_examples=max(5, int(int(os.environ.get("ORZBOB_FUZZ_EXAMPLES", "15")) * 4 * scale)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def hooks(runtime: Runtime) -> Iterator[TestClient]:
    use_billing(runtime, "http://127.0.0.1:9")
    with TestClient(create_app(runtime)) as c:
        yield c


@pytest.fixture
def org(make_org: Callable[..., OrgHandle]) -> OrgHandle:
    return make_org()


def state(runtime: Runtime, org: OrgHandle) -> tuple[Any, ...]:
    """Everything a webhook could change: the deliveries, and the org's plan and Polar link."""
    row = org_row(runtime, org.id)
    with runtime.session() as s:
        ids = tuple(s.scalars(select(WebhookDelivery.id).order_by(WebhookDelivery.id)))
    return ids, row.plan_id, row.polar_customer_id, row.polar_subscription_id


def valid_body(org: OrgHandle) -> bytes:
    return envelope("subscription.active", subscription(org.id, start=T0 - timedelta(days=1)))


texts = st.text(max_size=80)
header_values = st.one_of(texts, st.from_regex(r"v1,[A-Za-z0-9+/=]{0,60}", fullmatch=True))
timestamps = st.one_of(
    texts,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True).map(str),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(), kids, max_size=5),
        max_leaves=30,
    ).map(lambda v: json.dumps(v).encode()),
)


def latin1(value: str) -> bytes:
    # Header values travel as bytes (latin-1); line breaks cannot be sent inside one at all.
    return value.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")


class TestOnlyAValidSignatureGetsIn:
    def test_random_headers_and_bodies_are_refused_and_change_nothing(
        self, hooks: TestClient, runtime: Runtime, org: OrgHandle
    ) -> None:
        before = state(runtime, org)

        @fuzz_settings()
        @given(
            body=bodies,
            webhook_id=st.one_of(st.none(), texts),
            stamp=st.one_of(st.none(), timestamps),
            signature=st.one_of(st.none(), header_values),
        )
        def attempt(
            body: bytes, webhook_id: str | None, stamp: str | None, signature: str | None
        ) -> None:
            headers: dict[str, str | bytes] = {"content-type": "application/json"}
            for name, value in (
                ("webhook-id", webhook_id),
                ("webhook-timestamp", stamp),
                ("webhook-signature", signature),
            ):
                if value is not None:
                    headers[name] = latin1(value)
            r = hooks.post(URL, content=body, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "invalid_signature"

        attempt()
        assert state(runtime, org) == before

    @pytest.mark.parametrize(
        "offset", [timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=-3650)]
    )
    def test_stale_and_future_timestamps_are_refused(
        self, hooks: TestClient, runtime: Runtime, org: OrgHandle, offset: timedelta
    ) -> None:
        before = state(runtime, org)
        body = valid_body(org)
        headers = signed_headers(body, at=datetime.now(UTC) + offset)
        r = hooks.post(URL, content=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "invalid_signature"
        assert state(runtime, org) == before

    def test_any_tampering_with_a_signed_delivery_is_refused(
        self, hooks: TestClient, runtime: Runtime, org: OrgHandle
    ) -> None:
        before = state(runtime, org)
        body = valid_body(org)
        headers = signed_headers(body, webhook_id="evt_tamper")

        @fuzz_settings(scale=0.5)
        @given(
            part=st.sampled_from(["body", "webhook-id", "webhook-timestamp", "webhook-signature"]),
            index=st.integers(min_value=0, max_value=10_000),
            byte=st.integers(min_value=32, max_value=126),
        )
        def tamper(part: str, index: int, byte: int) -> None:
            sent_body, sent = body, dict(headers)
            if part == "body":
                i = index % len(body)
                if body[i] == byte:
                    return
                sent_body = body[:i] + bytes([byte]) + body[i + 1 :]
            else:
                value = sent[part]
                i = index % len(value)
                if ord(value[i]) == byte:
                    return
                sent[part] = value[:i] + chr(byte) + value[i + 1 :]
            r = hooks.post(URL, content=sent_body, headers=sent)
            assert r.status_code == 401, (part, r.text)

        tamper()
        assert state(runtime, org) == before

    def test_an_oversized_body_is_413_even_when_signed(
        self, hooks: TestClient, runtime: Runtime, org: OrgHandle
    ) -> None:
        before = state(runtime, org)
        data = subscription(org.id, start=T0 - timedelta(days=1), padding="x" * 1_100_000)
        body = envelope("subscription.active", data)
        r = hooks.post(URL, content=body, headers=signed_headers(body))
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert state(runtime, org) == before

    def test_a_valid_delivery_gets_in_once_and_its_replays_change_nothing(
        self, hooks: TestClient, runtime: Runtime, org: OrgHandle
    ) -> None:
        body = valid_body(org)
        headers = signed_headers(body, webhook_id="evt_once")
        first = hooks.post(URL, content=body, headers=headers)
        assert first.status_code == 200 and first.json()["status"] == "processed", first.text
        after = state(runtime, org)
        assert after[1] == "base-plus-usage" and after[0] == ("evt_once",)
        for _ in range(3):
            again = hooks.post(URL, content=body, headers=headers)
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert state(runtime, org) == after
