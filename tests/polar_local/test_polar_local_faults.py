"""Fault injection as the SDK sees it over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from polar.base import PolarNetworkError, PolarRateLimitError, PolarServerError

from tests.polar_local.polar_local_support import LocalPolar, local_polar

EVENT = {"name": "instance.minutes", "external_customer_id": "org_1", "metadata": {"minutes": 1}}


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LocalPolar]:
    with local_polar(tmp_path / "polar.db") as server:
        yield server


def ingest(lp: LocalPolar, ext_id: str) -> int:
    return lp.polar.events.ingest(events=[{**EVENT, "external_id": ext_id}]).inserted


def test_next_n_calls_get_429_with_retry_after(lp: LocalPolar) -> None:
    lp.control(
        "POST", "/faults", json={"kind": "status", "status": 429, "retry_after": 7, "count": 2}
    )

    errors = []
    for _ in range(2):
        with pytest.raises(PolarRateLimitError) as err:
            ingest(lp, "a")
        errors.append(err.value)

    assert [e.retry_after for e in errors] == [7, 7]
    assert ingest(lp, "a") == 1
    (rule,) = lp.control("GET", "/faults")["items"]
    assert (rule["remaining"], rule["fired"]) == (0, 2)


def test_429_body_is_empty_with_integer_retry_after(lp: LocalPolar) -> None:
    lp.control("POST", "/faults", json={"kind": "status", "status": 429, "count": 1})

    response = lp.http.get("/v1/meters/", headers={"Authorization": "Bearer polar_oat_x"})

    assert response.status_code == 429
    assert response.content == b""
    assert response.headers["retry-after"] == "1"


def test_503_and_500_are_server_errors(lp: LocalPolar) -> None:
    lp.control("POST", "/faults", json={"kind": "status", "status": 503, "count": 1})
    lp.control("POST", "/faults", json={"kind": "status", "status": 500, "count": 1})

    with pytest.raises(PolarServerError) as first:
        ingest(lp, "b")
    with pytest.raises(PolarServerError) as second:
        ingest(lp, "b")

    assert (first.value.status_code, second.value.status_code) == (503, 500)
    assert ingest(lp, "b") == 1
    assert lp.control("GET", "/events/stats")["count"] == 1


def test_dropped_connection_is_a_network_error(lp: LocalPolar) -> None:
    lp.control("POST", "/faults", json={"kind": "drop", "count": 1})

    with pytest.raises(PolarNetworkError):
        ingest(lp, "c")
    lp.control("POST", "/faults", json={"kind": "drop", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{lp.url}/v1/events/ingest", json={"events": []})

    assert ingest(lp, "c") == 1
    logged = lp.control("GET", "/requests", params={"path_prefix": "/v1/events/ingest"})
    assert [r["fault"] for r in logged["items"]] == [None, "drop", "drop"]
    assert lp.control("GET", "/events/stats")["count"] == 1


def test_faults_can_be_limited_to_a_path(lp: LocalPolar) -> None:
    lp.control(
        "POST",
        "/faults",
        json={"kind": "status", "status": 503, "path_prefix": "/v1/events/ingest"},
    )

    meters = lp.polar.meters.list()
    with pytest.raises(PolarServerError):
        ingest(lp, "d")
    cleared = lp.control("DELETE", "/faults")

    assert meters.items == []
    assert cleared == {"cleared": 1}
    assert ingest(lp, "d") == 1


def _outcomes(lp: LocalPolar, n: int) -> list[bool]:
    results = []
    for i in range(n):
        try:
            ingest(lp, f"r{i}")
            results.append(True)
        except PolarServerError:
            results.append(False)
    return results


def test_rate_based_faults_with_a_seed_repeat_exactly(lp: LocalPolar) -> None:
    spec = {"kind": "status", "status": 500, "rate": 0.5, "seed": 42}
    lp.control("POST", "/faults", json=spec)
    first = _outcomes(lp, 20)
    lp.control("POST", "/reset")
    lp.control("POST", "/faults", json=spec)
    second = _outcomes(lp, 20)

    assert first == second
    assert 0 < first.count(False) < 20
    assert lp.control("GET", "/events/stats")["count"] == first.count(True)


def test_latency_delays_but_the_call_succeeds(lp: LocalPolar) -> None:
    lp.control("POST", "/faults", json={"kind": "latency", "latency_ms": 50, "count": 1})

    assert ingest(lp, "slow") == 1
    (rule,) = lp.control("GET", "/faults")["items"]
    assert rule["fired"] == 1


def test_bad_fault_specs_are_refused(lp: LocalPolar) -> None:
    missing_status = lp.http.post("/_control/faults", json={"kind": "status"})
    both = lp.http.post("/_control/faults", json={"kind": "drop", "count": 1, "rate": 0.5})

    assert missing_status.status_code == 422
    assert both.status_code == 422
    assert lp.control("GET", "/faults") == {"items": []}
