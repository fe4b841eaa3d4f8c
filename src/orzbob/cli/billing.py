"""`orz cloud billing`, `orz cloud spend-limit …` and `orz support …`, over the HTTP API."""

from __future__ import annotations

import os
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from orzbob.cli.billing_view import render_billing
from orzbob.cli.client import ApiClient
from orzbob.cli.output import console, fail, print_json, safe, typer_app

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API object as JSON.")]
OrgOpt = Annotated[str, typer.Option("--org", help="Organization id.")]

spend_limit_app = typer_app(help="Your spend limit (org admins).", no_args_is_help=True)
support_app = typer_app(
    help="Support tooling with a staff token: org billing, credits, audit log.",
    no_args_is_help=True,
)
credit_app = typer_app(help="Credits given back to an organization.", no_args_is_help=True)
support_app.add_typer(credit_app, name="credit")


def _client(ctx: typer.Context) -> ApiClient:
    client = ctx.find_object(ApiClient)
    if client is None:  # pragma: no cover - the group callbacks always set one
        fail("internal error: no API client")
    return client


def _org(value: str, what: str = "organization id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        fail(f"{value!r} is not a valid {what}")


# -- the billing view ------------------------------------------------------------------------
def billing(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """This period's usage, estimated bill, reset date and throttle status."""
    body = _client(ctx).json("GET", "/v1/billing")
    if json_out:
        print_json(body)
    else:
        render_billing(console, body)


# -- spend limit -----------------------------------------------------------------------------
def _limit(ctx: typer.Context, amount: str | None, json_out: bool) -> None:
    body = _client(ctx).json("PUT", "/v1/billing/spend-limit", json={"amount": amount})
    if json_out:
        print_json(body)
    elif body["spend_limit"] is None:
        console.print("Spend limit removed.")
    else:
        console.print(
            safe(
                f"Spend limit set to ${body['spend_limit']} (estimated bill "
                f"${body['estimate']['total']}, throttle: {body['throttle_status']})."
            ),
            highlight=False,
        )


@spend_limit_app.command("set")
def spend_limit_set(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help='Dollars, e.g. "50.00".')],
    json_out: JsonOpt = False,
) -> None:
    """Pause instances when the estimated bill reaches AMOUNT dollars."""
    _limit(ctx, amount, json_out)


@spend_limit_app.command("clear")
def spend_limit_clear(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Remove the spend limit."""
    _limit(ctx, None, json_out)


@spend_limit_app.command("show")
def spend_limit_show(ctx: typer.Context) -> None:
    """Show the spend limit and the estimated bill."""
    body = _client(ctx).json("GET", "/v1/billing")
    limit = "none" if body["spend_limit"] is None else f"${body['spend_limit']}"
    console.print(
        safe(f"Spend limit: {limit}; estimated bill ${body['estimate']['total']}"), highlight=False
    )


def register_cloud_commands(cloud: typer.Typer) -> None:
    cloud.command("billing")(billing)
    cloud.add_typer(spend_limit_app, name="spend-limit")


# -- support ---------------------------------------------------------------------------------
@support_app.callback()
def _support_options(
    ctx: typer.Context,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Orzbob API URL (env ORZ_API_URL).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Staff API token (env ORZ_STAFF_TOKEN).")
    ] = None,
) -> None:
    ctx.obj = ApiClient.resolve(api_url, token or os.environ.get("ORZ_STAFF_TOKEN"))


@support_app.command("billing")
def support_billing(ctx: typer.Context, org: OrgOpt, json_out: JsonOpt = False) -> None:
    """An organization's billing object, as the customer sees it."""
    body = _client(ctx).json("GET", f"/v1/admin/orgs/{_org(org)}/billing")
    if json_out:
        print_json(body)
    else:
        render_billing(console, body)


@credit_app.command("grant")
def credit_grant(
    ctx: typer.Context,
    org: OrgOpt,
    amount: Annotated[str, typer.Option("--amount", help='Dollars, e.g. "25.00".')],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Reuse to retry safely (default: a new one)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Grant a credit (support_l1 ≤ $50, support_l2 ≤ $500, engineering any amount)."""
    body = _client(ctx).json(
        "POST",
        f"/v1/admin/orgs/{_org(org)}/credits",
        json={"amount": amount, "reason": reason},
        headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )
    if json_out:
        print_json(body)
        return
    console.print(
        safe(
            f"Granted ${body['amount']} to {body['org_id']} (credit {body['id']}); it reduces "
            f"the period starting {body['period_start'][:10]}. Polar: {body['polar_state']}."
        ),
        highlight=False,
    )


@credit_app.command("list")
def credit_list(ctx: typer.Context, org: OrgOpt, json_out: JsonOpt = False) -> None:
    """Credits granted to an organization, newest first, with their Polar state."""
    rows = _client(ctx).json("GET", f"/v1/admin/orgs/{_org(org)}/credits")
    if json_out:
        print_json(rows)
        return
    table = Table("granted", "amount", "by", "period", "polar", "reason")
    for r in rows:
        polar = r["polar_state"] + (f" ({r['polar_error']})" if r["polar_error"] else "")
        table.add_row(
            safe(r["created_at"][:16]),
            safe(f"${r['amount']}"),
            safe(r["granted_by_role"]),
            safe(r["period_start"][:10]),
            safe(polar),
            safe(r["reason"]),
        )
    console.print(table)


@credit_app.command("retry")
def credit_retry(ctx: typer.Context, credit_id: str, json_out: JsonOpt = False) -> None:
    """Send a credit whose Polar delivery failed to Polar again (support_l2, engineering)."""
    body = _client(ctx).json(
        "POST", f"/v1/admin/credits/{_org(credit_id, 'credit id')}/polar-retry"
    )
    if json_out:
        print_json(body)
    else:
        console.print(safe(f"Credit {body['id']} is queued for Polar again."), highlight=False)


@support_app.command("audit")
def audit(
    ctx: typer.Context,
    org: Annotated[str | None, typer.Option("--org", help="Only this organization.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. credit.grant")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The append-only audit log, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if org:
        params["org"] = _org(org)
    if action:
        params["action"] = action
    page = _client(ctx).json("GET", "/v1/admin/audit", params=params)
    if json_out:
        print_json(page)
        return
    table = Table("at", "action", "org", "by", "details", "reason")
    for e in page["entries"]:
        details = ", ".join(f"{k}={v}" for k, v in e["details"].items())
        table.add_row(
            safe(e["at"][:19]),
            safe(e["action"]),
            safe((e["org_id"] or "")[:8]),
            safe(e["actor_role"]),
            safe(details),
            safe(e["reason"] or ""),
        )
    console.print(table)
