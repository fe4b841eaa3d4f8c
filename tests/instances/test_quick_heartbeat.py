"""The common heartbeat is written in one statement that authenticates as it writes
(`instance_service.quick_heartbeat`, PostgreSQL). It must answer and write exactly what the
full way does; whatever it cannot judge (caps that may be reached, a missed timeout, refused
tokens, unknown or stopped instances) goes the full way, which the other tests cover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orzbob.accounts import service as accounts
from orzbob.instances import service as instances
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance

VOLATILE = {"id", "name"}


def _start(client: TestClient, org: OrgHandle) -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _beat(client: TestClient, org: OrgHandle, iid: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json=body)
    assert r.status_code == 200, r.text
    return {k: v for k, v in r.json().items() if k not in VOLATILE}


@pytest.mark.parametrize(
    "body",
    [{"active": True, "source": "ide"}, {"active": True}, {"active": False, "source": "ssh"}],
)
@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_common_beat_is_one_statement_and_writes_what_the_full_way_writes(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
    is_postgres: bool,
    body: dict[str, Any],
    state: str,
) -> None:
    org = make_org()
    quick, full = _start(client, org), _start(client, org)
    if state == "paused":
        for iid in (quick, full):
            assert client.post(f"/v1/instances/{iid}/pause", headers=org.headers).is_success
    advance(runtime, 30)
    for iid in (quick, full):  # an earlier active beat, so an idle one keeps its source
        _beat(client, org, iid, {"active": True, "source": "terminal"})
    advance(runtime, 30)
    accounts.token_cache.clear()
    statements.clear()
    quick_out = _beat(client, org, quick, body)
    if is_postgres:
        # The token, the org and the caps' prefilter are read by the one UPDATE, which
        # commits as it runs: no BEGIN or COMMIT round trip.
        assert len(statements) == 1 and statements[0].startswith("UPDATE instances")
        assert statements[0].endswith(" (autocommit)"), statements
    accounts.token_cache.clear()
    with monkeypatch.context() as m:
        m.setattr(instances, "quiet_clauses", {})  # no quiet condition: the full way
        statements.clear()
        full_out = _beat(client, org, full, body)
        assert len(statements) > 1
        assert not any(q.endswith(" (autocommit)") for q in statements), statements
    assert quick_out == full_out
    listed = {
        i["id"]: {k: v for k, v in i.items() if k not in VOLATILE}
        for i in client.get("/v1/instances", headers=org.headers).json()
    }
    assert listed[quick] == listed[full]
    assert listed[quick] == {k: v for k, v in quick_out.items() if k != "notice"}


def test_a_beat_for_another_orgs_instance_is_404_and_writes_nothing(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    ours, theirs = make_org("Ours"), make_org("Theirs", email="ops@theirs.test")
    iid = _start(client, theirs)
    before = client.get(f"/v1/instances/{iid}", headers=theirs.headers).json()
    advance(runtime, 30)
    accounts.token_cache.clear()
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=ours.headers, json={"active": True})
    assert r.status_code == 404, r.text
    assert client.get(f"/v1/instances/{iid}", headers=theirs.headers).json() == before


def test_a_beat_for_a_stopped_instance_is_409(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = _start(client, org)
    assert client.delete(f"/v1/instances/{iid}", headers=org.headers).is_success
    advance(runtime, 30)
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert r.status_code == 409 and "stopped" in r.json()["detail"], r.text


def test_a_beat_after_a_missed_timeout_stops_the_instance_at_its_last_beat(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = _start(client, org)
    last = _beat(client, org, iid, {"active": True})["last_seen_at"]
    advance(runtime, runtime.settings.heartbeat_timeout_seconds + 60)
    out = _beat(client, org, iid, {"active": True, "source": "ide"})
    assert (out["state"], out["reason"]) == ("stopped", "heartbeat_timeout")
    assert out["last_seen_at"] == last
