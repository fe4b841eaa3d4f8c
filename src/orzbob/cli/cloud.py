"""`orz cloud`: instances, the simulated agent and usage, over the HTTP API."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from orzbob.cli.billing import register_cloud_commands
from orzbob.cli.client import ApiClient, save_credentials
from orzbob.cli.output import console, err_console, line, print_json, safe, typer_app

app = typer_app(help="Your cloud instances, usage and bill.", no_args_is_help=True)
# `orz login` is `orz cloud login` at the top level.
login_app = typer_app()
register_cloud_commands(app)  # `billing` and `spend-limit …` (cli/billing.py)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API object as JSON.")]


@app.callback()
def _options(
    ctx: typer.Context,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Orzbob API URL (env ORZ_API_URL).")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="API token (env ORZ_TOKEN).")] = None,
) -> None:
    ctx.obj = ApiClient.resolve(api_url, token)


def _client(ctx: typer.Context) -> ApiClient:
    client: ApiClient = ctx.obj
    return client


def _show(instance: dict[str, Any], json_out: bool, verb: str | None = None) -> None:
    if json_out:
        print_json(instance)
        return
    reason = f" ({instance['reason']})" if instance.get("reason") else ""
    prefix = f"{verb} " if verb else ""
    console.print(
        line(
            f"{prefix}instance ",
            safe(instance["id"], "bold"),
            " ",
            safe(f"{instance['name']} [{instance['tier']}] is {instance['state']}{reason}"),
        ),
        highlight=False,
    )


@login_app.command("login")
@app.command("login")
def login(
    ctx: typer.Context,
    token: Annotated[str, typer.Option("--token", prompt=True, hide_input=True)],
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Orzbob API URL (env ORZ_API_URL).")
    ] = None,
) -> None:
    """Save an API token (and the API URL) for later commands."""
    # `orz cloud login` has its client from the group's options; `orz login` has no group.
    group = ctx.obj if isinstance(ctx.obj, ApiClient) else None
    client = ApiClient.resolve(api_url or (group.api_url if group else None), token)
    client.token = token
    org = client.json("GET", "/v1/orgs/me")
    path = save_credentials(client.api_url, token)
    console.print(
        line(
            "Logged in to ",
            safe(org["name"]),
            safe(f" ({org['plan']}); credentials saved to {path}."),
        ),
        highlight=False,
    )


@app.command("new")
def new(
    ctx: typer.Context,
    tier: Annotated[str, typer.Option("--tier", help="small, medium, large or gpu.")] = "small",
    name: Annotated[str | None, typer.Option("--name")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a new instance."""
    body: dict[str, Any] = {"tier": tier}
    if name:
        body["name"] = name
    _show(_client(ctx).json("POST", "/v1/instances", json=body), json_out, "started")


@app.command("list")
def list_(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="Only this state.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List instances."""
    params = {"state": state} if state else {}
    rows = _client(ctx).json("GET", "/v1/instances", params=params)
    if json_out:
        print_json(rows)
        return
    # Ids are what the next command needs: never cut them. Times are UTC.
    table = Table(
        Column("id", no_wrap=True, min_width=36), Column("name", overflow="fold"), "tier",
        Column("state", overflow="fold"), Column("last active (UTC)", overflow="fold"),
    )  # fmt: skip
    for r in rows:
        state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
        source = r.get("last_active_source")
        active = _short_time(r.get("last_active_at")) + (f" {source}" if source else "")
        table.add_row(safe(r["id"]), safe(r["name"]), safe(r["tier"]), safe(state), safe(active))
    console.print(table)


def _short_time(value: str | None) -> str:
    """ "2026-03-10T12:00:00+00:00" → "03-10 12:00"."""
    return f"{value[5:10]} {value[11:16]}" if value else "—"


@app.command("show")
def show(ctx: typer.Context, instance_id: str, json_out: JsonOpt = False) -> None:
    """Show one instance."""
    _show(_client(ctx).json("GET", f"/v1/instances/{instance_id}"), json_out)


@app.command("pause")
def pause(ctx: typer.Context, instance_id: str, json_out: JsonOpt = False) -> None:
    """Pause an instance (its usage stops)."""
    _show(_client(ctx).json("POST", f"/v1/instances/{instance_id}/pause"), json_out, "paused")


@app.command("resume")
def resume(ctx: typer.Context, instance_id: str, json_out: JsonOpt = False) -> None:
    """Resume a paused instance."""
    _show(_client(ctx).json("POST", f"/v1/instances/{instance_id}/resume"), json_out, "resumed")


@app.command("kill")
def kill(ctx: typer.Context, instance_id: str, json_out: JsonOpt = False) -> None:
    """Stop an instance for good."""
    _show(_client(ctx).json("DELETE", f"/v1/instances/{instance_id}"), json_out, "stopped")


@app.command("agent")
def agent(
    ctx: typer.Context,
    instance_id: str,
    activity: Annotated[str, typer.Option("--activity", help="busy or idle.")] = "busy",
    interval: Annotated[float, typer.Option("--interval", help="Seconds between beats.")] = 30.0,
    count: Annotated[int, typer.Option("--count", help="Beats to send (0: until stopped).")] = 0,
) -> None:
    """Simulate an instance agent: heartbeat an instance over HTTP."""
    if activity not in ("busy", "idle"):
        err_console.print("--activity must be busy or idle")
        raise typer.Exit(2)
    client = _client(ctx)
    sent = 0
    while count == 0 or sent < count:
        beat = client.json(
            "POST", f"/v1/instances/{instance_id}/heartbeat", json={"active": activity == "busy"}
        )
        sent += 1
        console.print(
            safe(f"beat {sent}: {beat['state']} (last seen {beat['last_seen_at'][:19]})"),
            highlight=False,
        )
        if count == 0 or sent < count:
            time.sleep(interval)


@app.command("usage")
def usage(
    ctx: typer.Context,
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 start.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="RFC 3339 end.")] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export usage records (this billing period unless --from/--to are given)."""
    params = {k: v for k, v in (("from", from_), ("to", to)) if v}
    client = _client(ctx)
    if csv_out:
        params["format"] = "csv"
        typer.echo(client.request("GET", "/v1/billing/usage", params=params).text, nl=False)
        return
    rows = client.json("GET", "/v1/billing/usage", params=params)
    if json_out:
        print_json(rows)
        return
    table = Table("interval end", "instance", "tier", "minutes", "included", "billable", "state")
    for r in rows["records"]:
        table.add_row(
            safe(r["interval_end"][:19]),
            safe(r["instance_id"][:8]),
            safe(r["tier"]),
            str(r["minutes"]),
            str(r["included_minutes"]),
            str(r["billable_minutes"]),
            safe(r["state"]),
        )
    console.print(table)
    console.print(f"{rows['total_minutes']} minutes in {len(rows['records'])} records")
