"""`orz db`, `orz server`, `orz worker` and `orz dev`: the service itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import typer

from orzbob.cli import alerts
from orzbob.cli.common import cli_errors, console, run_db, settings_or_exit
from orzbob.cli.output import typer_app
from orzbob.config import Settings
from orzbob.runtime import Runtime

db_app = typer_app(help="Database schema.", no_args_is_help=True)
server_app = typer_app()
worker_app = typer_app()
dev_app = typer_app(
    help="Local development: the service with a local Polar server and a mail sink.",
    invoke_without_command=True,
)
dev_app.command("mail")(alerts.dev_mail)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from orzbob.kit.migrate import upgrade

    def work(rt: Runtime) -> None:
        upgrade(rt.engine)

    run_db(work)
    console.print("Database is up to date.")


@server_app.command("server")
def server(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
) -> None:
    """Run the HTTP API (and the periodic jobs, unless ORZBOB_RUN_JOBS=false)."""
    _serve(settings_or_exit(), host=host, port=port, migrate=migrate)


@worker_app.command("worker")
def worker(
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = False,
) -> None:
    """Run the periodic jobs without the HTTP API (checkpoints, sweeps, plan changes, the
    flusher, Polar customers and credits). Several workers may share one PostgreSQL
    database; give each a stable ORZBOB_WORKER_ID."""
    import signal
    import threading

    settings = settings_or_exit()
    with cli_errors():  # a refusal needs none of the worker's imports, so it comes first
        settings.check_startup()
    from orzbob.kit.migrate import upgrade
    from orzbob.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with cli_errors():
        runtime = Runtime.create(settings)
        if migrate:
            upgrade(runtime.engine)
        run_worker(runtime, stop)


def _serve(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    migrate: bool,
    before_start: Callable[[Runtime], None] | None = None,
) -> None:
    with cli_errors():  # a refusal needs none of the app's imports, so it comes first
        settings.check_startup()
    import uvicorn

    from orzbob.api.app import create_app
    from orzbob.jobs import register_jobs
    from orzbob.kit.migrate import upgrade
    from orzbob.testclock import control as testclock_control

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with cli_errors():
        runtime = Runtime.create(settings)
        if migrate:
            upgrade(runtime.engine)
        if before_start is not None:
            before_start(runtime)
        if settings.run_jobs:
            register_jobs(runtime)
        elif settings.test_clock:
            testclock_control.share(runtime)  # workers run the jobs; follow their clock
        application = create_app(runtime)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level="info",
        proxy_headers=True,
        # One log line per request costs more than a small request itself; the request id
        # header and the metrics say what an access log would (ORZBOB_ACCESS_LOG=true).
        access_log=settings.access_log,
    )


@dev_app.callback()
def dev(
    ctx: typer.Context,
    polar_port: Annotated[
        int, typer.Option("--polar-port", help="Port of the bundled local Polar server.")
    ] = 8765,
    smtp_port: Annotated[
        int, typer.Option("--smtp-port", help="SMTP port of the local mail sink.")
    ] = 1025,
    mail_port: Annotated[
        int, typer.Option("--mail-port", help="Web page of the local mail sink.")
    ] = 8025,
) -> None:
    """Run the service for local development: SQLite under ./var, the bundled local Polar
    server (synced with the catalog) and billing on, so usage flows end to end, and a local
    mail sink that keeps every e-mail (`orz dev mail`, or its web page)."""
    if ctx.invoked_subcommand is not None:
        return
    from orzbob.cli.dev import local_mail_for_dev, local_polar_for_dev

    with (
        local_polar_for_dev(settings_or_exit(), polar_port=polar_port) as (settings, sync),
        local_mail_for_dev(settings, smtp_port=smtp_port, web_port=mail_port) as settings,
    ):
        _serve(settings, host=None, port=None, migrate=True, before_start=sync)
