"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from orzbob.accounts.endpoints import router as accounts_router
from orzbob.alerts.endpoints import router as alerts_router
from orzbob.api.errors import install_error_handlers
from orzbob.api.health import router as health_router
from orzbob.api.middleware import (
    BodyLimitMiddleware,
    MetricsMiddleware,
    NulTextMiddleware,
    RequestIdMiddleware,
)
from orzbob.api.openapi import install_openapi
from orzbob.api.pages import router as pages_router
from orzbob.api.pages import static_files
from orzbob.billing.endpoints import router as billing_router
from orzbob.config import Settings, load_settings
from orzbob.credits.endpoints import router as credits_router
from orzbob.hooks import install_hooks
from orzbob.instances.endpoints import beats_router, heartbeat_router
from orzbob.instances.endpoints import router as instances_router
from orzbob.jobs import register_jobs
from orzbob.kit.db import POOL_SIZE
from orzbob.metering.endpoints import router as metering_router
from orzbob.polar.endpoints import WEBHOOK_PATH
from orzbob.polar.endpoints import router as polar_router
from orzbob.polar.reconcile_endpoints import router as reconcile_router
from orzbob.runtime import Runtime
from orzbob.testclock import control as testclock_control
from orzbob.testclock.endpoints import router as testclock_router

log = logging.getLogger(__name__)


def create_app(runtime: Runtime | None = None, *, settings: Settings | None = None) -> FastAPI:
    """Build the API. Periodic jobs run in a background thread unless the test clock drives
    them (or `ORZBOB_RUN_JOBS=false`, for processes that only serve requests)."""
    install_hooks()
    if runtime is None:
        settings = settings or load_settings()
        settings.check_startup()
        runtime = Runtime.create(settings)
        if settings.run_jobs:
            register_jobs(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in threads, each holding a pooled connection while it works. With
        # more threads (anyio's 40) than the pool keeps, the extra connections were opened and
        # closed again request after request, a new PostgreSQL backend each time; as many
        # threads as the pool keeps makes a request wait for a warm connection instead.
        to_thread.current_default_thread_limiter().total_tokens = POOL_SIZE[
            runtime.engine.dialect.name
        ]
        stop = threading.Event()
        worker: threading.Thread | None = None
        if runtime.settings.test_clock:
            testclock_control.restore(runtime)
            log.warning("test clock enabled: time stands still until POST /v1/test-clock/advance")
        elif runtime.settings.run_jobs and runtime.scheduler.jobs:
            worker = threading.Thread(
                target=runtime.scheduler.run_forever, args=(stop,), name="orzbob-jobs", daemon=True
            )
            worker.start()
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                worker.join(timeout=30)
            for hook in runtime.shutdown_hooks:
                hook()

    app = FastAPI(
        title="Orzbob Cloud Billing",
        version="0.1.0",
        description="Per-minute billing for Orzbob Cloud development environments.",
        lifespan=lifespan,
        # The service's metrics are Prometheus's (`/metrics`). FastAPI's OpenTelemetry hooks,
        # on by default, asked OpenTelemetry for its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_hooks()
    app.state.runtime = runtime
    # Innermost first: the NUL check reads a body the size limit has already bounded.
    app.add_middleware(NulTextMiddleware, raw_paths=frozenset({WEBHOOK_PATH}))
    app.add_middleware(BodyLimitMiddleware, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app)
    install_openapi(app)
    # Routes are matched in order, one by one: the hot paths (the billing read, heartbeats)
    # come first after the probes, so their requests do not test every other route first.
    for router in (
        health_router,
        billing_router,
        heartbeat_router,
        beats_router,
        instances_router,
        accounts_router,
        metering_router,
        credits_router,
        alerts_router,
        polar_router,
        reconcile_router,
        testclock_router,
        pages_router,
    ):
        app.include_router(router)
    app.mount("/static", static_files, name="static")
    return app
