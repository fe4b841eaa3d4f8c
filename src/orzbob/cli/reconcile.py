"""`orz polar reconcile`: the ledger against Polar's events, kept as a run."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orzbob.cli.common import (
    cli_errors,
    console,
    err_console,
    fail,
    print_json,
    runtime_or_exit,
    safe,
    settings_or_exit,
)
from orzbob.polar.client import PolarGateway
from orzbob.polar.reconcile import CLASSES
from orzbob.polar.reconcile_service import (
    EventReader,
    parse_period,
    reconcile_service,
    run_reconcile,
    run_view,
)

SHOWN = 25  # differences printed; `--json` has them all
LABELS = {
    "matched": "matched",
    "local_only": "local only",
    "polar_only": "Polar only",
    "mismatch": "amount mismatch",
}


def reconcile(
    period: Annotated[
        str, typer.Option("--period", help="current, previous or START..END (RFC 3339 or dates).")
    ] = "current",
    org: Annotated[str | None, typer.Option("--org", help="One org id (default: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    attempts: Annotated[
        int,
        typer.Option(
            "--attempts", min=1, max=20, help="Tries per page on 429, 5xx and network errors."
        ),
    ] = 8,
) -> None:
    """Compare the usage ledger with the events Polar holds, one external_id at a time, and
    keep the report (GET /v1/admin/reconcile/latest)."""
    try:
        spec = parse_period(period)
    except ValueError as exc:
        fail(str(exc))
    org_id = None
    if org is not None:
        try:
            org_id = uuid.UUID(org)
        except ValueError:
            fail(f"--org {org!r} is not an org id")
    settings = settings_or_exit()
    if not settings.polar_api_key or not settings.polar_api_key.get_secret_value():
        fail("POLAR_API_KEY is required for `orz polar reconcile` (an organization access token)")
    runtime = runtime_or_exit()
    gateway = PolarGateway(settings)
    try:
        with cli_errors():
            now = runtime.clock.now()
            with runtime.session() as session:
                windows = reconcile_service.windows(session, spec, org_id=org_id, now=now)
            # The bar goes to stderr so `--json` output stays one JSON document.
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[events]} events"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=not err_console.is_terminal,
            ) as progress:
                task = progress.add_task("reading Polar", total=len(windows), events=0)
                seen = [0]

                def on_window(i: int, n: int, _org: uuid.UUID) -> None:
                    seen[0] = progress.tasks[task].fields["events"]
                    progress.update(task, completed=i)

                def on_page(fetched: int, _total: int | None) -> None:
                    progress.update(task, events=seen[0] + fetched)

                run = run_reconcile(
                    runtime.sessions,
                    gateway,
                    runtime.catalog,
                    windows=windows,
                    period_label=spec.label,
                    scope="manual",
                    org_id=org_id,
                    now=now,
                    on_window=on_window,
                    on_page=on_page,
                    reader=EventReader(gateway, max_attempts=attempts),
                )
                progress.update(task, completed=len(windows))
    finally:
        gateway.close()
        runtime.engine.dispose()
    view = run_view(run)
    if json_out:
        print_json(view)
    else:
        _print(view)
    if run.status != "ok":
        if not json_out:
            fail(run.error or "reconciliation failed", code=2)
        raise typer.Exit(2)


def _print(view: dict[str, Any]) -> None:
    scope = f"org {view['org_id']}" if view["org_id"] else f"{view['windows']} org(s)"
    console.print(safe(f"reconciliation {view['id']}: period {view['period']}, {scope}"))
    table = Table("class", "records", "minutes", "dollars")
    for name in CLASSES:
        t = view["totals"][name]
        table.add_row(LABELS[name], str(t["count"]), str(t["minutes"]), f"${t['dollars']}")
    console.print(table)
    for code, info in view["explained"].items():
        if code != "matched":
            console.print(safe(f"  {info['count']} x {code}: {info['meaning']}"), highlight=False)
    for item in view["items"][:SHOWN]:
        text = (
            f"{LABELS[item['kind']]}: record {item['record_id'] or '-'} org {item['org_id']} "
            f"{item['tier'] or '?'} {item['minutes']} min ${item['dollars']} "
            f"[{item['explanation']}] {item['detail']}"
        )
        console.print(safe(text), highlight=False, soft_wrap=True)
    hidden = len(view["items"]) - SHOWN + view.get("items_omitted", 0)
    if hidden > 0:
        console.print(f"... and {hidden} more difference(s): use --json")
    if view["drift_minutes"]:
        console.print(f"drift: {view['drift_minutes']} minute(s) differ")
    else:
        console.print("no drift: the ledger and Polar agree")
