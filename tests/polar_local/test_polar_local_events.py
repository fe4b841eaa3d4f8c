"""Event ingest and reads through the real SDK over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from polar.v2026_10.errors import HTTPValidationError, ResourceNotFound

from tests.polar_local.polar_local_support import TOKEN, LocalPolar, local_polar


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LocalPolar]:
    with local_polar(tmp_path / "polar.db") as server:
        yield server


def usage(ext_id: str | None, minutes: float = 1, customer: str = "org_1") -> dict:
    event: dict = {
        "name": "instance.minutes",
        "external_customer_id": customer,
        "metadata": {"minutes": minutes, "tier": "small"},
    }
    if ext_id is not None:
        event["external_id"] = ext_id
    return event


def test_ingest_counts_inserted_and_duplicates(lp: LocalPolar) -> None:
    first = lp.polar.events.ingest(events=[usage("a", 3), usage("b", 4), usage("a", 3)])
    again = lp.polar.events.ingest(events=[usage("b", 4), usage("c", 5), usage(None, 1)])

    assert (first.inserted, first.duplicates) == (2, 1)
    assert (again.inserted, again.duplicates) == (2, 1)
    stats = lp.control("GET", "/events/stats", params={"sum": "minutes"})
    assert stats == {"count": 4, "duplicates": 2, "sums": {"minutes": 13.0}}


def test_a_batch_with_bad_events_is_refused_whole(lp: LocalPolar) -> None:
    events = [
        usage("ok-1"),
        {"name": "x" * 129, "external_customer_id": "org_1"},
        usage("ok-2"),
        {"external_customer_id": "org_1"},
        {**usage("org-id"), "organization_id": "5f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10"},
    ]
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.events.ingest(events=events)

    detail = err.value.error.detail
    assert err.value.status_code == 422
    assert [d.loc for d in detail] == [
        ["body", "events", 1, "name"],
        ["body", "events", 3, "name"],
        ["body", "events", 4, "organization_id"],
    ]
    assert detail[0].type == "string_too_long"
    assert detail[1].type == "missing"
    assert detail[2].type == "organization_token"
    assert lp.control("GET", "/events/stats")["count"] == 0


def test_future_timestamp_is_refused(lp: LocalPolar) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    with pytest.raises(HTTPValidationError) as err:
        lp.polar.events.ingest(
            events=[{**usage("p"), "timestamp": past}, {**usage("f"), "timestamp": future}]
        )

    (entry,) = err.value.error.detail
    assert entry.loc == ["body", "events", 1, "timestamp"]
    assert "Timestamp must be in the past." in entry.msg
    assert lp.control("GET", "/events/stats")["count"] == 0


def test_future_timestamp_is_accepted_with_the_flag(tmp_path: Path) -> None:
    future = datetime.now(UTC) + timedelta(days=3)
    with local_polar(tmp_path / "p.db", accept_future_timestamps=True) as lp:
        result = lp.polar.events.ingest(events=[{**usage("f"), "timestamp": future.isoformat()}])
        (event,) = lp.polar.events.list(external_customer_id="org_1").items

    assert result.inserted == 1
    assert datetime.fromisoformat(event.timestamp) == future


def test_naive_timestamp_is_refused(lp: LocalPolar) -> None:
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.events.ingest(events=[{**usage("n"), "timestamp": "2026-01-01T10:00:00"}])

    (entry,) = err.value.error.detail
    assert entry.loc == ["body", "events", 0, "timestamp"]
    assert entry.type == "timezone_aware"


def test_customer_id_events_need_an_existing_customer(lp: LocalPolar) -> None:
    customer = lp.polar.customers.create(email="ops@orzbob.dev", external_id="org_9")
    unknown = "0b8b3c9e-8f3e-4a2f-9b61-3f9e2f3b2a11"

    with pytest.raises(HTTPValidationError) as err:
        lp.polar.events.ingest(
            events=[
                {"name": "instance.minutes", "customer_id": customer.id},
                {"name": "instance.minutes", "customer_id": unknown},
                {"name": "instance.minutes", "customer_id": "not-a-uuid"},
            ]
        )
    ok = lp.polar.events.ingest(events=[{"name": "instance.minutes", "customer_id": customer.id}])

    detail = err.value.error.detail
    assert [d.loc for d in detail] == [["body", "events", i, "customer_id"] for i in (1, 2)]
    assert detail[0].msg == "Customer not found."
    assert detail[1].type == "uuid_parsing"
    assert ok.inserted == 1


def test_list_filters_and_paginates(lp: LocalPolar) -> None:
    base = datetime.now(UTC) - timedelta(minutes=30)
    events = [
        {
            **usage(f"e{i}", i, customer="org_a" if i % 2 else "org_b"),
            "timestamp": (base + timedelta(minutes=i)).isoformat(),
        }
        for i in range(7)
    ]
    events.append({"name": "other", "external_customer_id": "org_a", "external_id": "o"})
    lp.polar.events.ingest(events=events)

    page1 = lp.polar.events.list(external_customer_id="org_a", name="instance.minutes", limit=2)
    page2 = lp.polar.events.list(
        external_customer_id="org_a", name="instance.minutes", limit=2, page=2
    )
    everything = [*page1.items, *page2.items]
    by_meta = lp.polar.events.list(metadata={"tier": "small"}, limit=100)

    assert page1.pagination.total_count == 3
    assert page1.pagination.max_page == 2
    assert [e.metadata["minutes"] for e in page1.items] == [5, 3]
    assert [e.metadata["minutes"] for e in everything] == [5, 3, 1]
    assert all(e.external_customer_id == "org_a" for e in everything)
    assert by_meta.pagination.total_count == 7


def test_get_event_by_id_and_unknown_ids(lp: LocalPolar) -> None:
    lp.polar.events.ingest(events=[usage("g", 2)])
    (listed,) = lp.polar.events.list().items

    fetched = lp.polar.events.get(listed.id)
    with pytest.raises(ResourceNotFound):
        lp.polar.events.get("3f0b2a33-4d1c-4a47-9d7f-6a1d3c1b2e10")
    with pytest.raises(HTTPValidationError) as err:
        lp.polar.events.get("nope")

    assert fetched.id == listed.id
    assert fetched.metadata == {"minutes": 2, "tier": "small"}
    assert err.value.error.detail[0].loc == ["path", "id"]


def test_events_resolve_their_customer_once_it_exists(lp: LocalPolar) -> None:
    lp.polar.events.ingest(events=[usage("r", customer="org_late")])
    customer = lp.polar.customers.create(email="late@orzbob.dev", external_id="org_late")

    (event,) = lp.polar.events.list(customer_id=customer.id).items

    assert event.customer_id == customer.id
    assert event.customer is not None and event.customer.email == "late@orzbob.dev"


def test_data_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "persist.db"
    with local_polar(db) as lp:
        lp.polar.events.ingest(events=[usage("keep-1"), usage("keep-2")])
        lp.polar.customers.create(email="keep@orzbob.dev", external_id="org_keep")

    with local_polar(db) as lp:
        again = lp.polar.events.ingest(events=[usage("keep-2"), usage("keep-3")])
        customer = lp.polar.customers.get_external("org_keep")
        stats = lp.control("GET", "/stats")

    assert (again.inserted, again.duplicates) == (1, 1)
    assert customer.email == "keep@orzbob.dev"
    assert stats["events"] == 3
    assert stats["duplicates"] == 1


def test_authentication_is_required(lp: LocalPolar) -> None:
    missing = httpx.get(f"{lp.url}/v1/events/")
    wrong = httpx.get(f"{lp.url}/v1/events/", headers={"Authorization": "Bearer polar_pat_x"})
    good = httpx.get(f"{lp.url}/v1/events/", headers={"Authorization": f"Bearer {TOKEN}"})

    assert missing.status_code == 401
    assert missing.json() == {"error": "Unauthorized", "detail": "Unauthorized"}
    assert missing.headers["www-authenticate"] == 'Bearer realm="polar"'
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_token"
    assert good.status_code == 200
    assert good.headers["content-type"] == "application/json"


def test_control_lists_events_and_requests_and_resets(lp: LocalPolar) -> None:
    lp.polar.events.ingest(events=[usage("c1", 2, "org_x"), usage("c2", 3, "org_y")])

    listed = lp.control("GET", "/events", params={"external_customer_id": "org_x"})
    logged = lp.control("GET", "/requests", params={"path_prefix": "/v1/events/ingest"})
    lp.control("POST", "/reset")

    assert [e["external_id"] for e in listed["items"]] == ["c1"]
    assert listed["total"] == 1
    assert logged["items"][0]["status"] == 200
    assert '"external_id":"c1"' in logged["items"][0]["body"].replace(" ", "")
    assert lp.control("GET", "/stats")["events"] == 0
    assert lp.polar.events.ingest(events=[usage("c1")]).inserted == 1
