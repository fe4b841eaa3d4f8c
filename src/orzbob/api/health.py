from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from orzbob.api.deps import RuntimeDep
from orzbob.kit import metrics as m
from orzbob.kit.metrics import REGISTRY
from orzbob.metering.service import metering_service
from orzbob.polar.reconcile_service import reconcile_service
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    ok = True
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
        ok = False
    checks["billing"] = (
        "enabled" if runtime.settings.billing_enabled else "disabled: usage stays local"
    )
    checks["clock"] = "test clock" if runtime.settings.test_clock else "system"
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", include_in_schema=False)
def metrics(runtime: RuntimeDep) -> Response:
    refresh_database_gauges(runtime)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def refresh_database_gauges(runtime: Runtime) -> None:
    """The money-path gauges read from the database at scrape time, so every API replica
    reports them even though the jobs that change them run in the workers."""
    try:
        now = runtime.clock.now()
        with runtime.read_session() as session:
            pending, oldest, dead = metering_service.queue_stats(session)
            open_drift = reconcile_service.open_drift(session)
            closed_drift = reconcile_service.closed_drift(session, now=now)
    except SQLAlchemyError:
        log.warning("metrics: the database could not be read; gauges keep their last values")
        return
    m.usage_meter_queue.set(pending)
    m.usage_meter_oldest_unsent_seconds.set(
        max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    )
    m.usage_meter_dead.set(dead)
    if open_drift is not None:
        m.reconcile_drift_minutes.labels(scope="open_period").set(open_drift)
    m.reconcile_drift_minutes.labels(scope="closed_period").set(closed_drift)
