"""`orz alerts` (deliver now, render the examples), `orz support alerts` and `orz dev mail`."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from orzbob.cli.client import ApiClient
from orzbob.cli.common import cli_errors, console, fail, print_json, runtime_or_exit
from orzbob.cli.output import typer_app

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API object as JSON.")]
DEV_MAILDIR = Path("var/mail")

alerts_app = typer_app(
    help="Budget alert e-mails: deliver them, render the examples.", no_args_is_help=True
)


@alerts_app.command("send")
def send(
    loop: Annotated[bool, typer.Option("--loop/--once", help="Keep sending every interval.")] = (
        False
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1000)] = 50,
    lease_seconds: Annotated[
        int | None,
        typer.Option(
            "--lease-seconds", min=1, help="Lease on claimed alerts (ORZBOB_ALERT_LEASE_SECONDS)."
        ),
    ] = None,
) -> None:
    """Deliver due budget alerts over SMTP. Several may run against one PostgreSQL database;
    each alert is claimed by one of them."""
    from orzbob.alerts.sender import AlertSender

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runtime = runtime_or_exit()
    sender = AlertSender(
        sessions=runtime.sessions,
        settings=runtime.settings,
        clock=runtime.clock,
        batch_size=batch_size,
        lease=timedelta(seconds=lease_seconds or runtime.settings.alert_lease_seconds),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while True:
        report = sender.run()
        console.print(
            f"alerts: {report.sent} sent, {report.retrying} to retry, {report.failed} failed, "
            f"{report.undeliverable} undeliverable"
            + (f"; paused: {report.stopped}" if report.stopped else ""),
            highlight=False,
            markup=False,
        )
        if not loop or stop.wait(runtime.settings.alerts_send_interval_seconds):
            break
    runtime.engine.dispose()


@alerts_app.command("examples")
def examples(
    out: Annotated[Path, typer.Option("--out", help="Folder to write into.")] = Path("docs/alerts"),
    manage_url: Annotated[str, typer.Option("--manage-url")] = "https://cloud.orzbob.example/",
) -> None:
    """Render one e-mail of each kind (text, HTML, .eml) from the real templates."""
    from orzbob.alerts.examples import write_examples

    runtime = runtime_or_exit()
    runtime.engine.dispose()
    files = write_examples(runtime.catalog, out, manage_url=manage_url)
    console.print(f"{len(files)} files written to {out}", highlight=False, markup=False)


# -- support -----------------------------------------------------------------------------------
def support_alerts(
    ctx: typer.Context,
    org: Annotated[str, typer.Option("--org", help="Organization id.")],
    resend: Annotated[
        str | None, typer.Option("--resend", help="Queue this alert id for delivery again.")
    ] = None,
    all_periods: Annotated[bool, typer.Option("--all", help="Every period, not only this one.")] = (
        False
    ),
    json_out: JsonOpt = False,
) -> None:
    """An organization's budget alerts and their delivery; `--resend ID` sends one again."""
    import uuid

    client = ctx.find_object(ApiClient)
    if client is None:  # pragma: no cover - the support callback always sets one
        fail("internal error: no API client")
    try:
        org_id = str(uuid.UUID(org))
        alert_id = str(uuid.UUID(resend)) if resend else None
    except ValueError:
        fail("--org and --resend take ids (UUIDs)")
    if alert_id:
        body = client.json("POST", f"/v1/admin/alerts/{alert_id}/resend")
        if json_out:
            print_json(body)
        else:
            console.print(
                f"Alert {body['id']} ({body['threshold']}% {body['kind']}) is queued again as "
                f"{body['message_id']}.",
                highlight=False,
                markup=False,
            )
        return
    page = client.json(
        "GET", f"/v1/admin/orgs/{org_id}/alerts", params={"all": str(all_periods).lower()}
    )
    if json_out:
        print_json(page)
        return
    render_alerts(page["alerts"])


def render_alerts(alerts: list[dict[str, Any]]) -> None:
    if not alerts:
        console.print("No budget alerts in this period.")
        return
    table = Table("raised (UTC)", "kind", "%", "state", "sent", "to", "detail", "id")
    for a in alerts:
        detail = a["last_error"] or a["smtp_reply"] or a["subject"]
        if a["state"] == "covered":
            detail = f"covered by {str(a['covered_by'])[:8]} (a higher threshold)"
        # Server and database text is shown as text, never as Rich markup.
        table.add_row(
            *(
                Text(str(v))
                for v in (
                    a["created_at"][:16].replace("T", " "),
                    a["kind"],
                    a["threshold"],
                    a["state"],
                    (a["sent_at"] or "")[:16].replace("T", " "),
                    ", ".join(a["recipients"]),
                    detail,
                    a["id"],
                )
            )
        )
    console.print(table)


# -- the local mail sink (`orz dev mail`) --------------------------------------------------------
def dev_mail(
    show: Annotated[
        int | None, typer.Option("--show", help="Print message N (1 = oldest) as text.")
    ] = None,
    html: Annotated[bool, typer.Option("--html", help="With --show: the HTML part.")] = False,
    maildir: Annotated[Path, typer.Option("--maildir")] = DEV_MAILDIR,
) -> None:
    """Mail the local service sent (kept by the sink `orz dev` runs; nothing leaves the
    machine). Also at http://127.0.0.1:8025 while `orz dev` runs."""
    from orzbob.alerts.local_sink import read_maildir

    with cli_errors():
        messages = read_maildir(maildir)
    if show is None:
        if not messages:
            console.print(f"No mail in {maildir} yet.", highlight=False, markup=False)
            return
        table = Table("#", "date", "to", "subject")
        for i, (_, msg) in enumerate(messages, 1):
            table.add_row(
                Text(str(i)),
                Text(str(msg["Date"])),
                Text(str(msg["To"])),
                Text(str(msg["Subject"])),
            )
        console.print(table)
        return
    if not 1 <= show <= len(messages):
        fail(f"there is no message {show}; {len(messages)} kept in {maildir}")
    msg = messages[show - 1][1]
    body = msg.get_body(preferencelist=("html",) if html else ("plain",))
    console.print(
        f"Subject: {msg['Subject']}\nTo: {msg['To']}\nMessage-ID: {msg['Message-ID']}\n",
        highlight=False,
        markup=False,
    )
    console.print(
        "" if body is None else body.get_content(),
        highlight=False,
        markup=False,
    )
