"""Helpers for tests that ship usage to the local Polar-compatible server over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from orzbob.accounts.service import account_service
from orzbob.config import Settings
from orzbob.instances.service import instance_service
from orzbob.metering.flusher import Flusher
from orzbob.metering.models import UsageSegment
from orzbob.metering.service import metering_service
from orzbob.polar.client import PolarGateway
from orzbob.quota.allocation import UsageDraft
from orzbob.runtime import Runtime
from tests.polar_local.polar_local_support import local_polar as polar_server

TOKEN = "polar_oat_" + "t" * 40


@contextmanager
def local_polar(tmp_path: Path, **kwargs: Any) -> Iterator[str]:
    """The local Polar server (the one test helper, tests/polar_local) in `tmp_path`; yields
    its URL."""
    with polar_server(tmp_path / "polar.db", **kwargs) as server:
        yield server.url


def billing_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "billing_enabled": True,
        "polar_api_url": url,
        "polar_api_key": TOKEN,
        "polar_webhook_secret": "whsec_" + "w" * 40,
        **extra,
    }
    for secret in ("polar_api_key", "polar_webhook_secret"):
        values[secret] = SecretStr(values[secret])
    return settings.model_copy(update=values)


def make_records(runtime: Runtime, n: int, *, plan: str = "usage-only") -> tuple[uuid.UUID, int]:
    """Write `n` one-minute usage records through the service path; returns (org, minutes)."""
    now = runtime.clock.now()
    with runtime.session() as s:
        org = account_service.create_org(
            s,
            name="Flushco",
            billing_emails=["ops@flush.test"],
            plan_id=plan,
            catalog=runtime.catalog,
            now=now,
        )
        inst = instance_service.create(
            s, org.id, tier="small", name=None, catalog=runtime.catalog, now=now
        )
        seg = s.query(UsageSegment).filter_by(instance_id=inst.id).one()
        start = now - timedelta(minutes=n)
        for chunk in range(0, n, 1000):
            drafts = [
                UsageDraft(
                    org.id,
                    inst.id,
                    seg.id,
                    "small",
                    start + timedelta(minutes=i),
                    start + timedelta(minutes=i + 1),
                    1,
                )
                for i in range(chunk, min(n, chunk + 1000))
            ]
            metering_service.record(s, org, drafts, catalog=runtime.catalog, now=now)
        return org.id, n


def flusher_for(runtime: Runtime, settings: Settings, **kw: Any) -> Flusher:
    opts: dict[str, Any] = {"sleep": lambda _s: None, "base_delay": 0.001}
    opts.update(kw)
    return Flusher(sessions=runtime.sessions, gateway=PolarGateway(settings), **opts)


def control(url: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/_control", timeout=10)


def server_stats(url: str, org_id: uuid.UUID | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"sum": "minutes"}
    if org_id:
        params["external_customer_id"] = str(org_id)
    with control(url) as c:
        return dict(c.get("/events/stats", params=params).json())
