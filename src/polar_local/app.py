"""Assembles the local Polar-compatible FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request

from . import (
    control,
    routes_customers,
    routes_discounts,
    routes_events,
    routes_meters,
    routes_products,
    routes_subscriptions,
)
from .common import Clock, utc_now
from .context import ServerContext
from .errors import ControlDisabled, InvalidToken, Unauthorized, install_error_handlers
from .faults import FaultInjector, FaultMiddleware
from .store import Store
from .webhooks import WebhookSender

TOKEN_PREFIX = "polar_oat_"
# SDK 1.0.2 sends one of these; Polar answers 404 to any other value.
SUPPORTED_VERSIONS = frozenset({"2026-04", "2026-10", "2027-01"})


def require_token(request: Request) -> None:
    """Accept any organization access token; refuse the rest the way Polar does."""
    version = request.headers.get("polar-version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise HTTPException(status_code=404, detail="Not Found")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    if not token.strip().startswith(TOKEN_PREFIX):
        raise InvalidToken()


def _control_gate(enabled: bool) -> Callable[[], None]:
    def gate() -> None:
        if not enabled:
            raise ControlDisabled()

    return gate


def create_app(
    db_path: str | Path,
    *,
    accept_future_timestamps: bool = False,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_max_attempts: int = 10,
    webhook_retry_base_seconds: float = 2.0,
    webhook_retry_max_seconds: float = 20 * 60.0,
    record_requests: bool = True,
    clock: Clock = utc_now,
    control_api: bool = False,
) -> FastAPI:
    """Build the app around the SQLite file at `db_path` (created if missing, reused if not).

    `accept_future_timestamps` lets events carry timestamps ahead of the server clock (for a
    client running on a test clock). Webhooks go to `webhook_url`, signed with
    `webhook_secret`; both can be changed later through `PUT /_control/webhooks`. `clock`
    drives object timestamps and the "not in the future" check.

    `control_api` opens `/_control` (reset, fault injection, direct subscription setup), which
    has no authentication: only `orz dev`, `orz polar serve-local` and the tests turn it on.
    Otherwise every control call is refused with 403.
    """
    store = Store(db_path)
    webhooks = WebhookSender(
        store,
        url=webhook_url,
        secret=webhook_secret,
        max_attempts=webhook_max_attempts,
        retry_base_seconds=webhook_retry_base_seconds,
        retry_max_seconds=webhook_retry_max_seconds,
        clock=clock,
    )
    faults = FaultInjector()
    ctx = ServerContext(store, webhooks, faults, clock, accept_future_timestamps)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        webhooks.close()
        store.close()

    app = FastAPI(title="Local Polar-compatible server", lifespan=lifespan)
    app.state.polar = ctx
    install_error_handlers(app)
    auth = [Depends(require_token)]
    for module in (
        routes_events,
        routes_meters,
        routes_products,
        routes_customers,
        routes_subscriptions,
        routes_discounts,
    ):
        app.include_router(module.router, dependencies=auth)
    app.include_router(control.router, dependencies=[Depends(_control_gate(control_api))])
    recorder = store.log_request if record_requests else None
    app.add_middleware(FaultMiddleware, faults=faults, recorder=recorder)
    return app


def context_of(app: FastAPI) -> ServerContext:
    """The server state behind an app made by `create_app` (store, faults, webhooks)."""
    ctx: ServerContext = app.state.polar
    return ctx
