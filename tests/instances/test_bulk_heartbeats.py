"""`POST /v1/heartbeats`: scoping, caps, stopped and unknown instances, bad input."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance
from tests.throttle.support import instance, recorded_minutes, segments, start

URL = "/v1/heartbeats"


def beats(*items: tuple[str, bool], source: str = "ide") -> dict[str, list[dict[str, object]]]:
    return {
        "beats": [
            {"instance_id": i, "active": a, **({"source": source} if a else {})} for i, a in items
        ]
    }


def test_an_org_token_beats_its_own_instances_only(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    acme, globex = make_org("Acme"), make_org("Globex")
    a1, a2 = start(client, acme), start(client, acme)
    g1 = start(client, globex)
    advance(runtime, 60)
    ghost = str(uuid.uuid4())
    r = client.post(
        URL, headers=acme.headers, json=beats((a1, True), (a2, False), (g1, True), (ghost, True))
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["unknown"], body["stopped"], body["duplicates"]) == (2, 2, 0, 0)
    # Another org's instance is indistinguishable from one that does not exist.
    assert set(body["unknown_ids"]) == {g1, ghost}
    now = runtime.clock.now().isoformat().replace("+00:00", "Z")
    i1, i2 = instance(client, acme, a1), instance(client, acme, a2)
    assert (i1["last_seen_at"], i1["last_active_at"], i1["last_active_source"]) == (now, now, "ide")
    assert i2["last_seen_at"] == now and i2["last_active_at"] != now
    assert instance(client, globex, g1)["last_seen_at"] != now


def test_a_fleet_token_beats_any_org_and_nothing_else(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    acme, globex = make_org("Acme"), make_org("Globex")
    a1, g1 = start(client, acme), start(client, globex)
    fleet = staff_headers("fleet")
    advance(runtime, 60)
    body = client.post(URL, headers=fleet, json=beats((a1, True), (g1, True))).json()
    assert (body["accepted"], body["unknown"]) == (2, 0)
    assert client.get("/v1/admin/orgs", headers=fleet).status_code == 403
    assert client.get("/v1/billing", headers=fleet).status_code == 403
    r = client.post(URL, headers=staff_headers("support_l1"), json=beats((a1, True)))
    assert r.status_code == 403 and "fleet" in r.json()["detail"]
    assert client.post(URL, json=beats((a1, True))).status_code == 401


def test_stopped_instances_are_listed_so_their_agents_shut_down(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    live, gone = start(client, org), start(client, org)
    client.delete(f"/v1/instances/{gone}", headers=org.headers)
    body = client.post(URL, headers=org.headers, json=beats((live, True), (gone, True))).json()
    assert (body["accepted"], body["stopped"], body["stopped_ids"]) == (1, 1, [gone])


def test_duplicates_in_a_batch_count_once_active_if_any_was(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = start(client, org)
    advance(runtime, 60)
    body = client.post(
        URL,
        headers=org.headers,
        json={
            "beats": [
                {"instance_id": iid, "active": True, "source": "ssh"},
                {"instance_id": iid, "active": False},
                {"instance_id": iid, "active": True, "source": "job"},
            ]
        },
    ).json()
    assert (body["accepted"], body["duplicates"]) == (1, 2)
    inst = instance(client, org, iid)
    assert inst["last_active_at"] == inst["last_seen_at"] and inst["last_active_source"] == "job"


def test_bad_input_is_a_clear_422_and_changes_nothing(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    iid = start(client, org)
    before = instance(client, org, iid)
    advance(runtime, 60)
    too_many = {"beats": [{"instance_id": iid, "active": True}] * 1001}
    for body in (
        too_many,
        {"beats": []},
        {"beats": [{"instance_id": "not-a-uuid", "active": True}]},
        {"beats": [{"instance_id": iid, "active": "yes"}]},
        {"beats": [{"instance_id": iid, "active": True, "source": "<script>"}]},
        {"beats": [{"instance_id": iid, "active": True}], "extra": 1},
    ):
        r = client.post(URL, headers=org.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == "invalid_request" and r.json()["detail"]
    assert instance(client, org, iid) == before


def test_a_beat_that_crosses_a_cap_pauses_its_instance_at_the_cap(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()  # free tier: idle after 30 minutes
    iid, other = start(client, org), start(client, org)
    started = runtime.clock.now()
    for _ in range(8):
        advance(runtime, 240)
        r = client.post(URL, headers=org.headers, json=beats((iid, False), (other, True)))
        assert r.status_code == 200
    body = r.json()
    assert body["paused"] == [{"instance_id": iid, "reason": "idle"}]
    assert instance(client, org, iid)["state"] == "paused"
    assert instance(client, org, other)["state"] == "running"
    assert segments(runtime, iid)[0].ended_at == started + timedelta(minutes=30)
    assert recorded_minutes(runtime, iid) == 30


def test_a_late_beat_applies_the_missed_heartbeat_timeout(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org(plan="base-plus-usage")
    iid = start(client, org)
    started = runtime.clock.now()
    advance(runtime, 20 * 60)  # silent for longer than the 5-minute timeout
    body = client.post(URL, headers=org.headers, json=beats((iid, True))).json()
    assert (body["accepted"], body["stopped_ids"]) == (0, [iid])
    inst = instance(client, org, iid)
    assert (inst["state"], inst["reason"]) == ("stopped", "heartbeat_timeout")
    assert segments(runtime, iid)[0].ended_at == started


def test_each_beat_keeps_its_own_source_whatever_it_spells(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    # On PostgreSQL the batch's sources travel as one array literal: a source spelled like
    # the literal's NULL, or with its punctuation, is still that source.
    org = make_org(plan="usage-only")
    ids = [start(client, org) for _ in range(3)]
    sources = ["null", "a.b-c_d", "ide"]
    advance(runtime, 60)
    r = client.post(
        URL,
        headers=org.headers,
        json={
            "beats": [
                {"instance_id": i, "active": True, "source": s}
                for i, s in zip(ids, sources, strict=True)
            ]
        },
    )
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    assert [instance(client, org, i)["last_active_source"] for i in ids] == sources
