"""`orz metering` and `orz polar`: operating the usage pipeline and the Polar connection."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from orzbob.cli.common import (
    cli_errors,
    console,
    err_console,
    fail,
    line,
    print_json,
    run_db,
    runtime_or_exit,
    safe,
    settings_or_exit,
)
from orzbob.cli.dev import POLAR_LOCAL_MISSING
from orzbob.cli.output import typer_app
from orzbob.metering.service import metering_service
from orzbob.runtime import Runtime

metering_app = typer_app(
    help="The usage pipeline: queue status and the flusher.", no_args_is_help=True
)
polar_app = typer_app(
    help="Polar.sh: product sync and the local Polar-compatible server.", no_args_is_help=True
)


@metering_app.command("status")
def status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Usage records by state (pending records wait for the flusher)."""

    def work(rt: Runtime) -> dict[str, int]:
        with rt.session() as s:
            return metering_service.queue_counts(s)

    counts = run_db(work)
    if json_out:
        print_json(counts)
    else:
        for state, n in counts.items():
            console.print(f"{state:>8}: {n}")


@metering_app.command("dead")
def dead(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead-lettered usage records and the reason Polar gave."""

    def work(rt: Runtime) -> list[dict[str, str]]:
        with rt.session() as s:
            rows = metering_service.dead_records(s, limit=limit)
            return [
                {
                    "id": str(r.id),
                    "org_id": str(r.org_id),
                    "minutes": str(r.minutes),
                    "interval_end": r.interval_end.isoformat(),
                    "error": r.last_error or "",
                }
                for r in rows
            ]

    rows = run_db(work)
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(
            safe(f"{r['id']}  org {r['org_id']}  {r['minutes']} min  {r['error']}"),
            highlight=False,
        )
    console.print(f"{len(rows)} dead record(s) shown")


@metering_app.command("requeue")
def requeue(
    record_ids: Annotated[
        list[str] | None, typer.Argument(help="Record ids (default: all dead).")
    ] = None,
    lost: Annotated[
        bool,
        typer.Option(
            "--lost",
            help="Also resend the named records marked sent that reconciliation found "
            "missing at Polar.",
        ),
    ] = False,
) -> None:
    """Send dead-lettered records again once the cause is fixed (Polar drops any it has by
    external_id, so a resend never bills twice)."""
    ids: list[uuid.UUID] = []
    for raw in record_ids or []:
        try:
            ids.append(uuid.UUID(raw))
        except ValueError:
            fail(f"{raw!r} is not a usage record id")
    if lost and not ids:
        fail("--lost needs the record ids to resend (from `orz polar reconcile`)")

    def work(rt: Runtime) -> int:
        with rt.session() as s:
            return metering_service.requeue(s, ids, lost=lost)

    n = run_db(work)
    console.print(f"{n} record(s) back in the queue; the next flush sends them.")


@metering_app.command("flush")
def flush(
    loop: Annotated[bool, typer.Option("--loop/--once", help="Keep flushing every interval.")] = (
        False
    ),
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=10000)] = None,
    lease_seconds: Annotated[
        int | None,
        typer.Option(
            "--lease-seconds", min=1, help="Lease on claimed records (FLUSH_LEASE_SECONDS)."
        ),
    ] = None,
) -> None:
    """Ship pending usage records to Polar. Several may run against one PostgreSQL database."""
    from orzbob.jobs import build_flusher

    settings = settings_or_exit()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with cli_errors():
        settings.check_startup()
        if not settings.billing_enabled:
            fail("BILLING_ENABLED is false: usage records stay local; nothing to flush to")
        runtime = Runtime.create(settings)
    flusher = build_flusher(runtime)
    if batch_size:
        flusher.batch_size = batch_size
    if lease_seconds:
        flusher.lease = timedelta(seconds=lease_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    total = 0
    while True:
        report = flusher.flush()
        total += report.sent
        console.print(
            f"flushed: {report.sent} sent, {report.duplicates} duplicates at Polar, "
            f"{report.dead} dead-lettered"
            + (f"; stopped: {report.stopped}" if report.stopped else ""),
            highlight=False,
        )
        if not loop or stop.wait(settings.flush_interval_seconds):
            break
    runtime.engine.dispose()


@polar_app.command("serve-local")
def serve_local(
    port: Annotated[int, typer.Option("--port")] = 8765,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    db: Annotated[Path, typer.Option("--db", help="SQLite file of the local server.")] = Path(
        "var/polar-local.db"
    ),
    accept_future_timestamps: Annotated[
        bool,
        typer.Option(
            "--accept-future-timestamps",
            help="Accept event timestamps ahead of real time (for the service's test clock).",
        ),
    ] = False,
    webhook_url: Annotated[str | None, typer.Option("--webhook-url")] = None,
    webhook_secret: Annotated[
        str | None, typer.Option("--webhook-secret", envvar="POLAR_WEBHOOK_SECRET")
    ] = None,
) -> None:
    """Run the bundled local Polar-compatible server (development, demos, tests)."""
    try:
        from polar_local import serve
    except ImportError:  # a production install leaves the development server out
        fail(POLAR_LOCAL_MISSING)

    db.parent.mkdir(parents=True, exist_ok=True)
    serve(
        host=host,
        port=port,
        db_path=db,
        accept_future_timestamps=accept_future_timestamps,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        control_api=True,  # a development command: its control API is the point
    )


@polar_app.command("sync")
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create or update Polar's meters and products to match the catalog (idempotent)."""
    settings = settings_or_exit()
    key = settings.polar_api_key.get_secret_value() if settings.polar_api_key else ""
    if not key:
        fail("POLAR_API_KEY is required for `orz polar sync` (an organization access token)")
    # After the refusal above, which needs neither the Polar SDK nor the sync.
    from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable
    from orzbob.polar.sync import CatalogSync

    runtime = runtime_or_exit()
    runtime.engine.dispose()  # only the catalog is needed; no database work
    gateway = PolarGateway(settings)
    try:
        report = CatalogSync(gateway).run(runtime.catalog, dry_run=dry_run)
    except (PolarUnavailable, PolarRejected) as exc:
        fail(f"Polar at {settings.polar_api_url}: {exc}")
    finally:
        gateway.close()
    if json_out:
        print_json(report.as_dict())
        return
    prefix = "would " if dry_run else ""
    for change in report.changes:
        console.print(safe(f"{prefix}{change.line()}"), highlight=False, soft_wrap=True)
    for warning in report.warnings:
        err_console.print(
            line(("warning: ", "yellow"), safe(warning)), highlight=False, soft_wrap=True
        )
    if not report.changes:
        console.print(f"no changes: Polar at {settings.polar_api_url} matches the catalog")
