from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from orzbob.runtime import Runtime
from tests.conftest import T0, OrgHandle


def test_advance_runs_registered_jobs_in_order(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    seen: list[tuple[str, datetime]] = []
    runtime.every("a", 60, lambda rt: seen.append(("a", rt.clock.now())))
    runtime.every("b", 150, lambda rt: seen.append(("b", rt.clock.now())))
    staff = staff_headers("engineering")

    assert client.get("/v1/test-clock", headers=staff).json()["now"].startswith("2026-03-10T12:00")
    r = client.post("/v1/test-clock/advance", headers=staff, json={"seconds": 300})
    assert r.status_code == 200
    assert r.json()["jobs_run"] == 5 + 2
    assert [s for s in seen if s[0] == "a"] == [
        ("a", T0 + timedelta(minutes=i)) for i in range(1, 6)
    ]
    assert [s[1] for s in seen if s[0] == "b"] == [T0 + timedelta(seconds=150 * i) for i in (1, 2)]
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    now = client.get("/v1/test-clock", headers=make_org().headers).json()["now"]
    assert datetime.fromisoformat(now) == T0 + timedelta(seconds=300)


def test_the_clock_stands_still_between_advances(
    client: TestClient, staff_headers: Callable[[str], dict[str, str]]
) -> None:
    staff = staff_headers("support_l1")
    first = client.get("/v1/test-clock", headers=staff).json()["now"]
    assert client.get("/v1/test-clock", headers=staff).json()["now"] == first


def test_only_staff_advance_and_input_is_checked(
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme = make_org()
    r = client.post("/v1/test-clock/advance", headers=acme.headers, json={"seconds": 60})
    assert r.status_code == 403
    staff = staff_headers("engineering")
    for bad in ({"seconds": -5}, {"seconds": "soon"}, {}, {"seconds": 10**12}):
        assert client.post("/v1/test-clock/advance", headers=staff, json=bad).status_code == 422


def test_disabled_test_clock_is_404(
    runtime: Runtime, staff_headers: Callable[[str], dict[str, str]]
) -> None:
    from orzbob.api.app import create_app

    runtime.settings = runtime.settings.model_copy(update={"test_clock": False})
    with TestClient(create_app(runtime)) as c:
        r = c.post(
            "/v1/test-clock/advance", headers=staff_headers("engineering"), json={"seconds": 5}
        )
        assert r.status_code == 404 and "not enabled" in r.json()["detail"]
