"""`orz admin`: organizations and tokens, straight against the database."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Column, Table

from orzbob.accounts.models import Role
from orzbob.accounts.schemas import OrgCreate
from orzbob.accounts.service import account_service
from orzbob.audit.service import audit_service
from orzbob.cli.common import console, fail, line, print_json, run_db, safe
from orzbob.cli.output import typer_app
from orzbob.runtime import Runtime

app = typer_app(help="Administration: organizations and API tokens.", no_args_is_help=True)
org_app = typer_app(help="Organizations.", no_args_is_help=True)
token_app = typer_app(help="Organization API tokens.", no_args_is_help=True)
staff_app = typer_app(help="Staff API tokens.", no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(token_app, name="token")
app.add_typer(staff_app, name="staff-token")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _uuid(value: str, what: str = "organization id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not a valid {what}")


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Option("--name", help="Organization name.")],
    email: Annotated[list[str], typer.Option("--email", help="Billing contact (repeatable).")],
    plan: Annotated[str | None, typer.Option("--plan", help="Plan id.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an organization and its first admin API token (shown once)."""
    try:
        body = OrgCreate(name=name, billing_emails=email, plan=plan)
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))

    def work(rt: Runtime) -> tuple[str, str, str]:
        with rt.session() as session:
            now = rt.clock.now()
            org = account_service.create_org(
                session,
                name=body.name,
                billing_emails=body.billing_emails,
                plan_id=body.plan,
                catalog=rt.catalog,
                now=now,
            )
            _, raw = account_service.create_token(
                session, org_id=org.id, role=Role.ADMIN, name="first admin token", now=now
            )
            return str(org.id), raw, org.plan_id

    org_id, token, plan_id = run_db(work)
    if json_out:
        print_json({"org_id": org_id, "token": token, "plan": plan_id})
    else:
        console.print(
            line(
                "Created organization ",
                safe(body.name, "bold"),
                f" ({org_id}) on plan ",
                safe(plan_id),
                ".",
            ),
            highlight=False,
        )
        console.print(line("Admin API token (shown once): ", safe(token, "bold")))


@org_app.command("list")
def org_list(json_out: JsonOpt = False) -> None:
    """List organizations."""

    def work(rt: Runtime) -> list[dict[str, str]]:
        with rt.session() as session:
            return [
                {
                    "id": str(o.id),
                    "name": o.name,
                    "plan": o.plan_id,
                    "created_at": str(o.created_at),
                }
                for o in account_service.list_orgs(session, limit=1000)
            ]

    rows = run_db(work)
    if json_out:
        print_json(rows)
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "name", "plan", "created")
    for r in rows:
        table.add_row(safe(r["id"]), safe(r["name"]), safe(r["plan"]), safe(r["created_at"][:19]))
    console.print(table)


@org_app.command("show")
def org_show(org_id: str, json_out: JsonOpt = False) -> None:
    """Show one organization."""
    oid = _uuid(org_id)

    def work(rt: Runtime) -> dict[str, object]:
        with rt.session() as session:
            o = account_service.get_org(session, oid)
            return {
                "id": str(o.id),
                "name": o.name,
                "plan": o.plan_id,
                "billing_emails": list(o.billing_emails),
                "signup_at": str(o.signup_at),
            }

    data = run_db(work)
    if json_out:
        print_json(data)
    else:
        for k, v in data.items():
            console.print(line((k, "bold"), ": ", safe(v)), highlight=False)


@org_app.command("set-plan")
def org_set_plan(org_id: str, plan: str, json_out: JsonOpt = False) -> None:
    """Move an organization to another plan now (normally Polar webhooks do this)."""
    oid = _uuid(org_id)

    def work(rt: Runtime) -> str:
        with rt.session() as session:
            org = account_service.get_org(session, oid, lock=True)
            before = org.plan_id
            account_service.set_plan(session, org, plan, catalog=rt.catalog, at=rt.clock.now())
            audit_service.record(
                session,
                action="plan.change",
                actor=None,
                org_id=org.id,
                now=rt.clock.now(),
                details={"from": before, "to": org.plan_id},
            )
            return org.plan_id

    new_plan = run_db(work)
    if json_out:
        print_json({"org_id": org_id, "plan": new_plan})
    else:
        console.print(safe(f"Organization {org_id} is now on {new_plan}."), highlight=False)


def _issue(org_id: uuid.UUID | None, role: str, name: str, json_out: bool) -> None:
    def work(rt: Runtime) -> tuple[str, str]:
        with rt.session() as session:
            token, raw = account_service.create_token(
                session, org_id=org_id, role=role, name=name, now=rt.clock.now()
            )
            return str(token.id), raw

    token_id, raw = run_db(work)
    if json_out:
        print_json(
            {
                "token_id": token_id,
                "org_id": str(org_id) if org_id else None,
                "role": role,
                "token": raw,
            }
        )
    else:
        console.print(line(safe(f"API token ({role}, shown once): "), safe(raw, "bold")))


@token_app.command("create")
def token_create(
    org: Annotated[str, typer.Option("--org", help="Organization id.")],
    role: Annotated[str, typer.Option("--role", help="member or admin.")] = "member",
    name: Annotated[str, typer.Option("--name")] = "api token",
    json_out: JsonOpt = False,
) -> None:
    """Issue an API token for an organization."""
    _issue(_uuid(org), role, name, json_out)


@staff_app.command("create")
def staff_token_create(
    role: Annotated[
        str, typer.Option("--role", help="support_l1, support_l2, engineering or fleet.")
    ],
    name: Annotated[str, typer.Option("--name")] = "staff token",
    json_out: JsonOpt = False,
) -> None:
    """Issue a staff API token."""
    _issue(None, role, name, json_out)
