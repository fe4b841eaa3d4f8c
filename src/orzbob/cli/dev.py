"""`orz dev`: the service with the bundled local Polar server, for a newcomer's first run.

Only this mode embeds credentials, and they are generated per run and valid nowhere but the
local server; `orz server` stays strict (real secrets from the environment, or no billing).
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from pydantic import SecretStr

from orzbob.cli.common import console, fail
from orzbob.config import Settings
from orzbob.runtime import Runtime

LOCAL_DB = Path("var/polar-local.db")
LOCAL_MAIL = Path("var/mail")

# `polar_local` ships with a development checkout, not with a production install.
POLAR_LOCAL_MISSING = (
    "the local Polar-compatible server is not installed here: `orz dev` and "
    "`orz polar serve-local` run from a development checkout (`make run`)"
)


def _reachable_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


@contextmanager
def local_polar_for_dev(
    settings: Settings, *, polar_port: int = 8765
) -> Iterator[tuple[Settings, Callable[[Runtime], None]]]:
    """Start the local Polar server (webhooks to this service), and yield the dev settings
    plus a hook that syncs the catalog to it once the database is ready. The server stops
    when the block exits (when the service stops)."""
    try:
        from polar_local import ServerThread, create_app
    except ImportError:  # a production install leaves the development server out
        fail(POLAR_LOCAL_MISSING)

    if settings.env == "production":
        fail("`orz dev` is for development; use `orz server` with real credentials")
    api_key = "polar_oat_dev" + secrets.token_hex(20)
    webhook_secret = "whsec_dev" + secrets.token_hex(24)
    service = f"http://{_reachable_host(settings.host)}:{settings.port}"
    LOCAL_DB.parent.mkdir(parents=True, exist_ok=True)
    app = create_app(
        LOCAL_DB,
        # The test clock runs ahead of real time; the local server must accept its events.
        accept_future_timestamps=settings.test_clock,
        webhook_url=f"{service}/v1/webhooks/polar",
        webhook_secret=webhook_secret,
        control_api=True,  # development: `/_control/stats` and friends are for the developer
    )
    try:
        polar = ServerThread(app, host="127.0.0.1", port=polar_port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{polar_port} for the local Polar server ({exc})")
    polar_url = polar.start()
    dev_settings = settings.model_copy(
        update={
            "billing_enabled": True,
            "polar_api_url": polar_url,
            "polar_api_key": SecretStr(api_key),
            "polar_webhook_secret": SecretStr(webhook_secret),
        }
    )
    console.print(
        f"local Polar-compatible server: {polar_url} (data in {LOCAL_DB}; "
        f"see {polar_url}/_control/stats)\n"
        "billing: ON, with credentials generated for this run and valid only on the local "
        "server (local dev values, never used elsewhere)",
        highlight=False,
        soft_wrap=True,
    )
    # uvicorn re-raises the SIGTERM it handled once the service has stopped; the default
    # action would kill the process before the local server is stopped.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit) if main else None
    try:
        yield dev_settings, lambda runtime: _sync(dev_settings, runtime)
    finally:
        polar.stop()
        if main:
            signal.signal(signal.SIGTERM, previous)
        console.print("local Polar server stopped")


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _sync(settings: Settings, runtime: Runtime) -> None:
    from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable
    from orzbob.polar.sync import CatalogSync

    gateway = PolarGateway(settings)
    try:
        report = CatalogSync(gateway).run(runtime.catalog)
    except (PolarUnavailable, PolarRejected) as exc:
        fail(f"syncing the catalog to the local Polar server failed: {exc}")
    finally:
        gateway.close()
    # Each change is logged by the sync itself; a summary is enough here.
    made = len(report.changes)
    console.print(
        f"polar sync: {made} change(s) made; {len(report.products)} products and "
        f"{len(report.meters)} meters match the catalog",
        highlight=False,
        soft_wrap=True,
    )


@contextmanager
def local_mail_for_dev(
    settings: Settings, *, smtp_port: int = 1025, web_port: int = 8025
) -> Iterator[Settings]:
    """Start the local mail sink (SMTP, kept in ./var/mail, shown on a web page) and yield
    settings that send alert e-mail to it. Development only: `orz server` never starts it."""
    from orzbob.alerts.local_sink import SinkHandler, SinkServer, viewer_app

    try:
        from polar_local import ServerThread
    except ImportError:  # a production install leaves the development server out
        fail(POLAR_LOCAL_MISSING)

    if settings.env == "production":
        fail("`orz dev` is for development; use `orz server` with a real SMTP server")
    handler = SinkHandler(LOCAL_MAIL)
    try:
        sink = SinkServer(handler, port=smtp_port).start()
        web = ServerThread(viewer_app(handler), host="127.0.0.1", port=web_port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{smtp_port} / :{web_port} for the mail sink ({exc})")
    web_url = web.start()
    console.print(
        f"local mail sink: smtp://127.0.0.1:{sink.port}, messages at {web_url} and with "
        f"`orz dev mail` (kept in {LOCAL_MAIL}; nothing leaves this machine)",
        highlight=False,
        soft_wrap=True,
    )
    try:
        yield settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": sink.port,
                "smtp_starttls": False,
                "smtp_username": None,
                "smtp_password": None,
            }
        )
    finally:
        web.stop()
        sink.stop()
