"""The five caps, driven through the API on the test clock as agents and customers would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance
from tests.polar.support import envelope, signed_headers, subscription, use_billing
from tests.quota.usage import move_clock_to
from tests.throttle.support import (
    beat,
    billing,
    instance,
    keep_alive,
    recorded_minutes,
    segments,
    start,
)

HOUR = 3600


def resume(client: TestClient, org: OrgHandle, iid: str):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/instances/{iid}/resume", headers=org.headers)


class TestContinuousCap:
    def test_an_active_instance_runs_exactly_8_hours_then_may_resume_at_once(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org(plan="base-plus-usage")
        iid = start(client, org)
        started = runtime.clock.now()
        keep_alive(client, runtime, org, [iid], 8 * HOUR - 60)
        assert instance(client, org, iid)["state"] == "running"
        keep_alive(client, runtime, org, [iid], 120)
        inst = instance(client, org, iid)
        assert (inst["state"], inst["reason"]) == ("paused", "continuous_cap")
        (seg,) = segments(runtime, iid)
        assert seg.ended_at == started + timedelta(hours=8)
        assert recorded_minutes(runtime, iid) == 480

        r = resume(client, org, iid)
        assert r.status_code == 200 and r.json()["state"] == "running"
        assert r.json()["run_started_at"] == r.json()["state_changed_at"]
        keep_alive(client, runtime, org, [iid], 7 * HOUR)  # the 8-hour clock restarted
        assert instance(client, org, iid)["state"] == "running"

    def test_upcoming_warns_an_hour_ahead_and_forgets_a_cap_that_fired(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org(plan="base-plus-usage")
        iid = start(client, org)
        started = runtime.clock.now()
        keep_alive(client, runtime, org, [iid], 7 * HOUR - 60)
        assert [u["cap"] for u in billing(client, org)["upcoming"]] == []
        keep_alive(client, runtime, org, [iid], 60)
        (up,) = billing(client, org)["upcoming"]
        assert (up["cap"], up["instance_id"]) == ("continuous_cap", iid)
        assert datetime.fromisoformat(up["at"]) == started + timedelta(hours=8)
        assert "8-hour continuous cap" in up["detail"]
        keep_alive(client, runtime, org, [iid], HOUR + 60)
        body = billing(client, org)
        assert body["upcoming"] == []
        assert instance(client, org, iid)["reason"] == "continuous_cap"


class TestIdle:
    def test_free_tier_pauses_after_30_minutes_without_activity(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org()
        iid = start(client, org)
        keep_alive(client, runtime, org, [iid], 10 * 60)
        assert instance(client, org, iid)["last_active_source"] == "ide"
        active_until = runtime.clock.now()
        # Passive beats keep it alive (no heartbeat timeout) but not awake.
        keep_alive(client, runtime, org, [iid], 29 * 60, active=False)
        assert instance(client, org, iid)["state"] == "running"
        keep_alive(client, runtime, org, [iid], 2 * 60, active=False)
        inst = instance(client, org, iid)
        assert (inst["state"], inst["reason"]) == ("paused", "idle")
        (seg,) = segments(runtime, iid)
        assert seg.ended_at == active_until + timedelta(minutes=30)
        assert recorded_minutes(runtime, iid) == 40

    def test_paid_plans_wait_60_minutes_and_the_source_shows_what_kept_it_awake(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org(plan="base-plus-usage")
        iid = start(client, org)
        assert beat(client, org, iid, source="ssh")["last_active_source"] == "ssh"
        keep_alive(client, runtime, org, [iid], 59 * 60, active=False)
        assert instance(client, org, iid)["state"] == "running"
        keep_alive(client, runtime, org, [iid], 2 * 60, active=False)
        inst = instance(client, org, iid)
        assert (inst["state"], inst["reason"], inst["last_active_source"]) == (
            "paused",
            "idle",
            "ssh",
        )
        assert resume(client, org, iid).json()["state"] == "running"

    def test_a_heartbeat_that_finds_the_cap_reached_pauses_and_says_so(
        self, runtime: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        # No sweep runs here: the beat itself finds the idle timeout passed. Activity it
        # reports does not undo a timeout that was due before it.
        org = make_org()
        iid = start(client, org)
        started = runtime.clock.now()
        for _ in range(7):
            advance(runtime, 240)
            beat(client, org, iid, active=False)
        advance(runtime, 240)  # 32 minutes without activity
        body = beat(client, org, iid, active=True)
        assert (body["state"], body["reason"]) == ("paused", "idle")
        assert "idle" in body["notice"] and "Usage stopped" in body["notice"]
        assert recorded_minutes(runtime, iid) == 30
        assert segments(runtime, iid)[0].ended_at == started + timedelta(minutes=30)


class TestDailyCap:
    def test_four_instances_from_midnight_pause_at_6am_until_the_next_midnight(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org(plan="base-plus-usage")
        midnight = datetime(2026, 3, 11, tzinfo=UTC)
        move_clock_to(runtime, midnight)
        iids = [start(client, org) for _ in range(4)]
        keep_alive(client, runtime, org, iids, 6 * HOUR - 60)
        assert {instance(client, org, i)["state"] for i in iids} == {"running"}
        assert billing(client, org)["upcoming"][0]["cap"] == "daily_cap"
        keep_alive(client, runtime, org, iids, 120)
        for i in iids:
            inst = instance(client, org, i)
            assert (inst["state"], inst["reason"]) == ("paused", "daily_cap")
            assert recorded_minutes(runtime, i) == 360
            assert segments(runtime, i)[0].ended_at == midnight + timedelta(hours=6)
        body = billing(client, org)
        assert (body["daily_usage"], body["throttle_status"]) == ("24h 0m", "daily_cap")
        assert body["throttles"][0]["lifts_at"] == "2026-03-12T00:00:00Z"

        for r in (
            client.post("/v1/instances", headers=org.headers, json={"tier": "small"}),
            resume(client, org, iids[0]),
        ):
            assert r.status_code == 409
            assert r.json()["error"] == "daily_cap"
            assert r.json()["retry_at"] == "2026-03-12T00:00:00Z"
            assert "00:00 UTC" in r.json()["detail"]

        move_clock_to(runtime, datetime(2026, 3, 12, tzinfo=UTC))
        assert resume(client, org, iids[0]).json()["state"] == "running"
        assert client.post(
            "/v1/instances", headers=org.headers, json={"tier": "small"}
        ).status_code == (201)
        assert billing(client, org)["throttle_status"] == "none"


class TestFreeAllowance:
    def test_pauses_at_exactly_600_small_minutes_and_an_upgrade_by_webhook_lifts_it(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org()
        iids = [start(client, org) for _ in range(2)]
        started = runtime.clock.now()
        keep_alive(client, runtime, org, iids, 5 * HOUR + 120)
        for i in iids:
            inst = instance(client, org, i)
            assert (inst["state"], inst["reason"]) == ("paused", "quota_exhausted")
            assert segments(runtime, i)[0].ended_at == started + timedelta(hours=5)
        body = billing(client, org)
        small = body["tiers"][0]
        assert (small["minutes"], small["included_minutes"], small["overage_minutes"]) == (
            600,
            600,
            0,
        )
        assert (body["estimated_bill"], body["throttle_status"]) == (0.0, "quota_exhausted")
        r = resume(client, org, iids[0])
        assert (r.status_code, r.json()["error"], r.json()["retry_at"]) == (
            409,
            "quota_exhausted",
            None,
        )

        use_billing(runtime, "http://127.0.0.1:9")
        payload = envelope("subscription.active", subscription(org.id, start=started))
        r = client.post("/v1/webhooks/polar", content=payload, headers=signed_headers(payload))
        assert r.status_code == 200, r.text
        assert billing(client, org)["plan_id"] == "base-plus-usage"
        assert resume(client, org, iids[0]).json()["state"] == "running"


class TestSpendLimit:
    def test_pauses_when_the_estimate_reaches_the_limit_and_a_higher_limit_lifts_it(
        self, with_jobs: Runtime, client: TestClient, make_org: Callable[..., OrgHandle]
    ) -> None:
        runtime = with_jobs
        org = make_org(plan="usage-only")
        r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "1.00"})
        assert r.status_code == 200
        iid = start(client, org, "gpu")
        keep_alive(client, runtime, org, [iid], 40 * 60)
        inst = instance(client, org, iid)
        assert (inst["state"], inst["reason"]) == ("paused", "spend_limit")
        # 28 gpu minutes are $0.97; the 29th reaches the limit ($1.01) and is the last.
        assert recorded_minutes(runtime, iid) == 29
        body = billing(client, org)
        assert (body["estimated_bill"], body["throttle_status"]) == (1.01, "spend_limit")
        assert resume(client, org, iid).json()["error"] == "spend_limit"

        client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "2.00"})
        assert resume(client, org, iid).json()["state"] == "running"
        keep_alive(client, runtime, org, [iid], 40 * 60)
        assert instance(client, org, iid)["reason"] == "spend_limit"
        client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": None})
        assert resume(client, org, iid).json()["state"] == "running"
