"""Reconciliation against the local Polar-compatible server over real HTTP: a clean run, an
event Polar lost, a record left pending, an event whose metadata Polar altered, and the
explanations, paging, rate limits, the kept report, the API and the jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from orzbob.kit import metrics
from orzbob.metering.models import RecordState, UsageRecord
from orzbob.metering.service import metering_service
from orzbob.polar.client import PolarGateway
from orzbob.polar.models import ReconcileRun
from orzbob.polar.reconcile_service import (
    EventReader,
    Window,
    parse_period,
    reconcile_service,
    run_reconcile,
    run_view,
)
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance
from tests.metering.polar_support import control, flusher_for, local_polar, make_records
from tests.polar.support import use_billing

SMALL = Decimal("0.083")


@pytest.fixture
def polar(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with local_polar(tmp_path, accept_future_timestamps=True) as url:
        use_billing(runtime, url)
        yield url


def shipped(runtime: Runtime, n: int) -> uuid.UUID:
    """An org with `n` one-minute small records, all sent to Polar."""
    org_id, _ = make_records(runtime, n)
    report = flusher_for(runtime, runtime.settings).flush()
    assert report.sent == n
    return org_id


def reconcile(runtime: Runtime, org_id: uuid.UUID | None, *, sleeps: list[float] | None = None):  # type: ignore[no-untyped-def]
    now = runtime.clock.now()
    with runtime.session() as s:
        windows = reconcile_service.windows(s, parse_period("current"), org_id=org_id, now=now)
    gateway = PolarGateway(runtime.settings)
    reader = EventReader(gateway, sleep=(sleeps.append if sleeps is not None else lambda _s: None))
    try:
        run = run_reconcile(
            runtime.sessions,
            gateway,
            runtime.catalog,
            windows=windows,
            period_label="current",
            scope="manual",
            org_id=org_id,
            now=now,
            reader=reader,
        )
    finally:
        gateway.close()
    return run_view(run)


def cost(minutes: int) -> str:
    return str((Decimal(minutes) * SMALL / 60).quantize(Decimal("0.01")))


def record_ids(runtime: Runtime, org_id: uuid.UUID) -> list[str]:
    with runtime.session() as s:
        rows = s.scalars(
            select(UsageRecord.id).where(UsageRecord.org_id == org_id).order_by(UsageRecord.id)
        )
        return [str(r) for r in rows]


def test_clean_run_matches_every_record_across_pages(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 250)  # three pages of 100
    view = reconcile(runtime, org_id)
    assert view["status"] == "ok" and view["drift_minutes"] == 0
    assert view["totals"]["matched"] == {"count": 250, "minutes": 250, "dollars": cost(250)}
    for name in ("local_only", "polar_only", "mismatch"):
        assert view["totals"][name] == {"count": 0, "minutes": 0, "dollars": "0.00"}
    assert view["items"] == []
    pages = httpx.get(f"{polar}/_control/requests", params={"path_prefix": "/v1/events/"}).json()
    assert len([r for r in pages["items"] if r["method"] == "GET"]) == 3


def test_an_event_polar_lost_is_local_only_and_a_resend_heals_it(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 5)
    lost = record_ids(runtime, org_id)[2]
    with control(polar) as c:
        assert c.delete(f"/events/{lost}").status_code == 200
        assert c.delete(f"/events/{lost}").status_code == 404
    view = reconcile(runtime, org_id)
    assert view["totals"]["local_only"] == {"count": 1, "minutes": 1, "dollars": cost(1)}
    assert view["totals"]["matched"]["count"] == 4 and view["drift_minutes"] == 1
    [item] = view["items"]
    assert (item["kind"], item["record_id"], item["explanation"]) == ("local_only", lost, "lost")
    assert view["explained"]["lost"]["count"] == 1

    # The fix the runbook gives: resend that record; Polar takes it (it no longer has it).
    with runtime.session() as s:
        assert metering_service.requeue(s, [uuid.UUID(lost)], lost=True) == 1
    assert flusher_for(runtime, runtime.settings).flush().sent == 1
    assert reconcile(runtime, org_id)["drift_minutes"] == 0


def test_a_record_left_pending_is_explained_as_not_yet_shipped(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 3)
    pending = record_ids(runtime, org_id)[0]
    with runtime.session() as s:
        s.execute(
            update(UsageRecord)
            .where(UsageRecord.id == uuid.UUID(pending))
            .values(state=RecordState.PENDING.value, sent_at=None)
        )
    with control(polar) as c:
        c.delete(f"/events/{pending}")
    view = reconcile(runtime, org_id)
    [item] = view["items"]
    assert (item["kind"], item["explanation"]) == ("local_only", "pending")
    assert view["explained"]["pending"]["meaning"].startswith("not yet shipped")


def test_an_event_whose_metadata_polar_altered_is_an_amount_mismatch(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 4)
    altered = record_ids(runtime, org_id)[1]
    with control(polar) as c:
        r = c.patch(
            f"/events/{altered}", json={"metadata": {"minutes": 61, "billable_minutes": 61}}
        )
        assert r.status_code == 200 and r.json()["metadata"]["tier"] == "small"
    view = reconcile(runtime, org_id)
    assert view["totals"]["mismatch"]["count"] == 1
    assert view["totals"]["mismatch"]["minutes"] == 60
    # Polar would bill 61 minutes where the ledger has 1: the difference at the small rate.
    assert Decimal(view["totals"]["mismatch"]["dollars"]) == (Decimal(60) * SMALL / 60).quantize(
        Decimal("0.01")
    )
    [item] = view["items"]
    assert item["record_id"] == altered and item["explanation"] == "metadata_differs"
    assert "minutes 1 here, 61 at Polar" in item["detail"]
    assert item["ledger"]["minutes"] == 1 and item["polar"]["minutes"] == 61


def test_a_changed_tier_is_a_mismatch_too(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 2)
    with control(polar) as c:
        c.patch(f"/events/{record_ids(runtime, org_id)[0]}", json={"metadata": {"tier": "gpu"}})
    view = reconcile(runtime, org_id)
    assert view["totals"]["mismatch"]["count"] == 1
    assert "tier small here, gpu at Polar" in view["items"][0]["detail"]


def test_an_event_the_ledger_never_wrote_is_polar_only(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 2)
    stray = str(uuid.uuid4())
    ts = (runtime.clock.now() - timedelta(minutes=30)).isoformat()
    meta = {"record_id": stray, "instance_id": str(uuid.uuid4()), "tier": "small"}
    meta |= {"minutes": 7, "billable_minutes": 7, "small_minutes": 0}
    event = {"name": "orzbob.compute", "external_customer_id": str(org_id), "external_id": stray}
    gateway = PolarGateway(runtime.settings)
    gateway.ingest([{**event, "timestamp": ts, "metadata": meta}])
    gateway.close()
    view = reconcile(runtime, org_id)
    assert view["totals"]["polar_only"] == {"count": 1, "minutes": 7, "dollars": cost(7)}
    assert view["items"][0]["explanation"] == "unknown_record"


def test_dead_records_carry_polars_reason(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 2)
    dead = record_ids(runtime, org_id)[1]
    with runtime.session() as s:
        s.execute(
            update(UsageRecord)
            .where(UsageRecord.id == uuid.UUID(dead))
            .values(state=RecordState.DEAD.value, last_error="timestamp: must be in the past")
        )
    with control(polar) as c:
        c.delete(f"/events/{dead}")
    [item] = reconcile(runtime, org_id)["items"]
    assert (item["explanation"], item["detail"]) == ("dead", "timestamp: must be in the past")


def test_records_shipped_after_their_period_closed_are_explained(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 2)
    with runtime.session() as s:
        windows = reconcile_service.windows(
            s, parse_period("current"), org_id=org_id, now=runtime.clock.now()
        )
        late = windows[0].end + timedelta(minutes=3)
        s.execute(update(UsageRecord).where(UsageRecord.org_id == org_id).values(sent_at=late))
    view = reconcile(runtime, org_id)
    assert view["drift_minutes"] == 0
    assert view["explained"]["later_cycle"]["count"] == 2


def test_rate_limits_are_waited_out_with_retry_after(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 3)
    with control(polar) as c:
        fault = {"kind": "status", "status": 429, "retry_after": 2, "count": 2}
        c.post("/faults", json={**fault, "path_prefix": "/v1/events/", "method": "GET"})
    sleeps: list[float] = []
    view = reconcile(runtime, org_id, sleeps=sleeps)
    assert view["status"] == "ok" and view["totals"]["matched"]["count"] == 3
    assert sleeps == [2, 2]


def test_polar_unreachable_keeps_a_failed_run_not_a_partial_report(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 1)
    with control(polar) as c:
        c.post("/faults", json={"kind": "status", "status": 503, "path_prefix": "/v1/events/"})
    view = reconcile(runtime, org_id)
    assert view["status"] == "failed" and "Polar could not be read" in view["error"]


def test_without_org_every_org_is_compared(runtime: Runtime, polar: str) -> None:
    shipped(runtime, 2)
    shipped(runtime, 3)
    view = reconcile(runtime, None)
    assert view["windows"] == 2 and view["totals"]["matched"]["minutes"] == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("last", "use current, previous or START..END"),
        ("2026-03-01..nope", "is not a date"),
        ("2026-03-02..2026-03-01", "end must be after the start"),
    ],
)
def test_bad_periods_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_period(text)


def test_range_windows_take_records_whose_interval_ends_inside(
    runtime: Runtime, polar: str
) -> None:
    org_id = shipped(runtime, 10)
    now = runtime.clock.now()
    spec = parse_period(f"{(now - timedelta(minutes=4)).isoformat()}..{now.isoformat()}")
    window = Window(org_id, spec.start, spec.end, None)  # type: ignore[arg-type]
    gateway = PolarGateway(runtime.settings)
    run = run_reconcile(
        runtime.sessions,
        gateway,
        runtime.catalog,
        windows=[window],
        period_label=spec.label,
        scope="manual",
        org_id=org_id,
        now=now,
    )
    gateway.close()
    assert run.summary["totals"]["matched"]["count"] == 4 and run.drift_minutes == 0


def test_latest_report_is_for_staff_only(
    runtime: Runtime,
    polar: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    assert (
        client.get("/v1/admin/reconcile/latest", headers=staff_headers("support_l1")).status_code
        == 404
    )
    org_id = shipped(runtime, 2)
    with control(polar) as c:
        c.delete(f"/events/{record_ids(runtime, org_id)[0]}")
    reconcile(runtime, org_id)
    r = client.get("/v1/admin/reconcile/latest", headers=staff_headers("support_l1"))
    assert r.status_code == 200
    body = r.json()
    assert body["drift_minutes"] == 1 and body["items"][0]["explanation"] == "lost"
    assert client.get("/v1/admin/reconcile/latest", headers=make_org().headers).status_code == 403
    other = client.get(
        "/v1/admin/reconcile/latest",
        params={"org": str(uuid.uuid4())},
        headers=staff_headers("engineering"),
    )
    assert other.status_code == 404


def test_jobs_reconcile_daily_and_right_after_a_period_closes(runtime: Runtime, polar: str) -> None:
    org_id = shipped(runtime, 3)
    from orzbob.jobs import register_jobs

    register_jobs(runtime)
    with runtime.session() as s:
        [window] = reconcile_service.windows(
            s, parse_period("current"), org_id=org_id, now=runtime.clock.now()
        )
    with control(polar) as c:
        c.delete(f"/events/{record_ids(runtime, org_id)[0]}")
    advance(runtime, 86400)
    gauge = metrics.reconcile_drift_minutes
    assert gauge.labels(scope="open_period")._value.get() == 1
    with runtime.session() as s:
        daily = s.scalars(select(ReconcileRun).where(ReconcileRun.scope == "daily")).all()
    assert daily and daily[-1].drift_minutes == 1

    # Past the period end (and the grace for the last flush): one run for the closed period.
    seconds = (window.end - runtime.clock.now()).total_seconds() + 3600
    advance(runtime, seconds)
    with runtime.session() as s:
        closed = s.scalars(select(ReconcileRun).where(ReconcileRun.scope == "period_close")).all()
    assert [(r.org_id, r.window_start, r.drift_minutes) for r in closed] == [
        (org_id, window.start, 1)
    ]
    assert gauge.labels(scope="closed_period")._value.get() == 1
    advance(runtime, 7200)
    with runtime.session() as s:
        again = s.scalars(select(ReconcileRun).where(ReconcileRun.scope == "period_close")).all()
    assert len(again) == 1
