"""Driving instances through the API on the test clock, as agents and customers would."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance


def start(client: TestClient, org: OrgHandle, tier: str = "small") -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": tier})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def beat(
    client: TestClient, org: OrgHandle, iid: str, *, active: bool = True, source: str = "ide"
) -> dict[str, Any]:
    body: dict[str, Any] = {"active": active}
    if active:
        body["source"] = source
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def keep_alive(
    client: TestClient,
    runtime: Runtime,
    org: OrgHandle,
    iids: list[str],
    seconds: int,
    *,
    every: int = 240,
    active: bool = True,
) -> None:
    """Advance the clock in steps, each instance's agent beating after every step. Steps of four
    minutes stay inside the five-minute heartbeat timeout while keeping hours of simulated
    running to a few hundred requests."""
    done = 0
    while done < seconds:
        step = min(every, seconds - done)
        advance(runtime, step)
        done += step
        for iid in iids:
            beat(client, org, iid, active=active)


def instance(client: TestClient, org: OrgHandle, iid: str) -> dict[str, Any]:
    r = client.get(f"/v1/instances/{iid}", headers=org.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def recorded_minutes(runtime: Runtime, iid: str) -> int:
    with runtime.session() as s:
        return int(
            s.scalar(
                select(func.coalesce(func.sum(UsageRecord.minutes), 0)).where(
                    UsageRecord.instance_id == uuid.UUID(iid)
                )
            )
            or 0
        )


def segments(runtime: Runtime, iid: str) -> list[UsageSegment]:
    with runtime.session() as s:
        return list(
            s.scalars(
                select(UsageSegment)
                .where(UsageSegment.instance_id == uuid.UUID(iid))
                .order_by(UsageSegment.started_at)
            )
        )


def billing(client: TestClient, org: OrgHandle) -> dict[str, Any]:
    r = client.get("/v1/billing", headers=org.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())
