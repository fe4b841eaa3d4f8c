"""Recording usage for quota tests through the real service paths."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.accounts.service import account_service
from orzbob.instances.models import Instance
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.metering.service import metering_service
from orzbob.quota.allocation import UsageDraft
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup
from orzbob.quota.periods import boundaries_between
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance


def run(client: TestClient, runtime: Runtime, org: OrgHandle, tier: str, seconds: float) -> str:
    """Start an instance, let it run `seconds` of test-clock time, stop it."""
    r = client.post("/v1/instances", headers=org.headers, json={"tier": tier})
    assert r.status_code == 201, r.text
    iid = str(r.json()["id"])
    advance(runtime, seconds)
    assert client.delete(f"/v1/instances/{iid}", headers=org.headers).status_code == 200
    return iid


def move_clock_to(runtime: Runtime, when: datetime) -> None:
    advance(runtime, (when - runtime.clock.now()).total_seconds())


def set_plan(client: TestClient, org: OrgHandle, plan: str, staff: dict[str, str]) -> None:
    r = client.put(f"/v1/admin/orgs/{org.id}/plan", headers=staff, json={"plan": plan})
    assert r.status_code == 200, r.text


class Meter:
    """Feeds drafts straight into `allocate` (the function metering calls), for tests that
    need exact intervals; one stand-in instance and segment per tier satisfy the keys."""

    def __init__(self, runtime: Runtime, org_id: uuid.UUID) -> None:
        self.runtime, self.org_id = runtime, org_id
        self.segments: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}

    def _segment(self, tier: str) -> tuple[uuid.UUID, uuid.UUID]:
        if tier not in self.segments:
            now = self.runtime.clock.now()
            with self.runtime.session() as s:
                inst = Instance(
                    org_id=self.org_id, name=f"meter-{tier}", tier=tier, state="stopped",
                    reason="user", created_at=now, state_changed_at=now, run_started_at=None,
                    last_seen_at=now, last_active_at=now, stopped_at=now,
                )  # fmt: skip
                s.add(inst)
                s.flush()
                seg = UsageSegment(
                    org_id=self.org_id, instance_id=inst.id, tier=tier, started_at=now,
                    ended_at=now, emitted_minutes=0, counted_until=now,
                )  # fmt: skip
                s.add(seg)
                s.flush()
                self.segments[tier] = (inst.id, seg.id)
        return self.segments[tier]

    def drafts(self, tier: str, start: datetime, minutes: int) -> list[UsageDraft]:
        """[start, start+minutes) cut at period boundaries and UTC midnights, as metering
        cuts a segment."""
        inst, seg = self._segment(tier)
        end = start + timedelta(minutes=minutes)
        with self.runtime.session() as s:
            org = account_service.get_org(s, self.org_id)
            points = boundaries_between(
                start,
                end,
                signup_at=org.signup_at,
                subscription_start=org.subscription_period_start,
                subscription_end=org.subscription_period_end,
            )
        out, cursor = [], start
        for point in [*points, end]:
            out.append(
                UsageDraft(
                    org_id=self.org_id,
                    instance_id=inst,
                    segment_id=seg,
                    tier=tier,
                    interval_start=cursor,
                    interval_end=point,
                    minutes=int((point - cursor).total_seconds() // 60),
                )
            )
            cursor = point
        return [d for d in out if d.minutes > 0]

    def record(self, drafts: list[UsageDraft]) -> list[dict[str, Any]]:
        with self.runtime.session() as s:
            org = account_service.get_org(s, self.org_id)
            return metering_service.record(
                s, org, drafts, catalog=self.runtime.catalog, now=self.runtime.clock.now()
            )

    def use(self, tier: str, start: datetime, minutes: int) -> list[dict[str, Any]]:
        return self.record(self.drafts(tier, start, minutes))


def records(runtime: Runtime, org_id: uuid.UUID) -> list[UsageRecord]:
    with runtime.session() as s:
        return list(
            s.scalars(
                select(UsageRecord)
                .where(UsageRecord.org_id == org_id)
                .order_by(UsageRecord.interval_end, UsageRecord.id)
            )
        )


def rollups_match_records(runtime: Runtime, org_id: uuid.UUID) -> None:
    """Every rollup equals the same sum recomputed from the usage records."""
    with runtime.session() as s:
        cols = (
            "minutes",
            "included_minutes",
            "overage_minutes",
            "billable_minutes",
            "small_minutes",
        )
        recomputed = {
            (ps, tier): tuple(int(v) for v in vals)
            for ps, tier, *vals in s.execute(
                select(
                    UsageRecord.period_start,
                    UsageRecord.tier,
                    *(func.sum(getattr(UsageRecord, c)) for c in cols),
                )
                .where(UsageRecord.org_id == org_id)
                .group_by(UsageRecord.period_start, UsageRecord.tier)
            )
        }
        rollups = {
            (r.period_start, r.tier): tuple(getattr(r, c) for c in cols)
            for r in s.scalars(select(QuotaTierRollup).where(QuotaTierRollup.org_id == org_id))
        }
        assert rollups == recomputed
        used = dict(
            s.execute(
                select(UsageRecord.period_start, func.sum(UsageRecord.small_minutes))
                .where(UsageRecord.org_id == org_id)
                .group_by(UsageRecord.period_start)
            ).all()
        )
        periods = {
            q.period_start: q.used_small_minutes
            for q in s.scalars(select(QuotaPeriod).where(QuotaPeriod.org_id == org_id))
        }
        assert periods == {k: int(v) for k, v in used.items()}
        days: dict[object, int] = {}
        for r in s.scalars(select(UsageRecord).where(UsageRecord.org_id == org_id)):
            day = (r.interval_end - timedelta(microseconds=1)).date()
            days[day] = days.get(day, 0) + r.minutes
        daily = {
            d.day: d.minutes
            for d in s.scalars(select(DailyUsage).where(DailyUsage.org_id == org_id))
        }
        assert daily == days
