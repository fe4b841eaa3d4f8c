"""`orz demo`: five organizations in five billing states, for a live-looking dashboard.

The orgs and their tokens are made with the account service (as `orz admin` does); all usage
then goes through the running service's API and its test clock: instances are started,
heartbeat as busy every few minutes (in bulk, as a fleet's control plane sends them), and
paused on a schedule while the clock advances and every periodic job (checkpoints, flush,
caps, alerts) runs as it would. Nothing is written
behind the service's back, so the dashboard and `orz cloud billing` show real figures.

Every session stays under the continuous-run cap and each org under the daily cap, so a
service that enforces caps pauses nothing early, except the free tier's hard stop, which is
the point of that org.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer

from orzbob.accounts.models import Role
from orzbob.accounts.service import account_service
from orzbob.cli.client import ApiClient
from orzbob.cli.common import console, err_console, fail, line, run_db, safe, settings_or_exit
from orzbob.cli.output import typer_app
from orzbob.runtime import Runtime

LEAD_IN_DAYS = 10
STEP_SECONDS = 240  # under the 5-minute heartbeat timeout
MINUTE = 60


@dataclass(frozen=True)
class Run:
    """One instance: started at `start` minutes, paused at `stop` (None: left running)."""

    tier: str
    name: str
    start: int
    stop: int | None


@dataclass(frozen=True)
class DemoOrg:
    name: str
    plan: str
    what: str
    runs: tuple[Run, ...]
    spend_limit: str | None = None


@dataclass
class Seeded:
    org: DemoOrg
    org_id: str
    token: str
    instances: dict[str, str] = field(default_factory=dict)  # run name -> instance id


# Five hours of clock in all: no session reaches the 8 h continuous cap, no org the daily cap.
ORGS = (
    DemoOrg(
        "Northwind Labs",
        "base-plus-usage",
        "within its allowance",
        (Run("gpu", "api-dev", 0, 192), Run("small", "web-dev", 0, None)),
    ),
    DemoOrg(
        "Bluefin Studio",
        "base-plus-usage",
        "at 92 % of its allowance",
        (
            Run("gpu", "train-a", 0, 216),
            Run("gpu", "train-b", 0, 216),
            Run("medium", "notebook", 0, 120),
        ),
    ),
    DemoOrg(
        "Copperline Data",
        "base-plus-usage",
        "in overage",
        (
            Run("gpu", "render-1", 0, 240),
            Run("gpu", "render-2", 0, 240),
            Run("gpu", "render-3", 0, 180),
        ),
    ),
    DemoOrg(
        "Pebble Hobby Co",
        "free-tier",
        "on the free tier, allowance used up",
        (Run("small", "sandbox", 0, 300), Run("small", "scratch", 0, 300)),
    ),
    DemoOrg(
        "Lumen Analytics",
        "base-plus-usage",
        "near its spend limit",
        (
            Run("gpu", "batch-1", 0, 240),
            Run("gpu", "batch-2", 0, 240),
            Run("gpu", "eval", 180, 240),
        ),
        spend_limit="24.00",
    ),
)
END_MINUTE = 300


def _staff_tokens(rt: Runtime) -> tuple[str, str]:
    """An engineering token (the test clock) and a fleet token (bulk heartbeats)."""
    with rt.session() as session:
        tokens = [
            account_service.create_token(
                session, org_id=None, role=role, name="orz demo", now=rt.clock.now()
            )[1]
            for role in (Role.ENGINEERING, Role.FLEET)
        ]
        return tokens[0], tokens[1]


def _create_orgs(now: datetime) -> Callable[[Runtime], list[tuple[str, str]]]:
    """Each demo org with an admin token, signed up at the service's (test-clock) time."""

    def work(rt: Runtime) -> list[tuple[str, str]]:
        made = []
        with rt.session() as session:
            for spec in ORGS:
                org = account_service.create_org(
                    session,
                    name=spec.name,
                    billing_emails=[f"billing@{spec.name.split()[0].lower()}.example"],
                    plan_id=spec.plan,
                    catalog=rt.catalog,
                    now=now,
                )
                _, raw = account_service.create_token(
                    session, org_id=org.id, role=Role.ADMIN, name="orz demo", now=now
                )
                made.append((str(org.id), raw))
        return made

    return work


def _all_runs() -> list[Run]:
    return [run for spec in ORGS for run in spec.runs]


def _pause(client: ApiClient, instance_id: str) -> None:
    """Pause on schedule; a cap may have paused it first (409), which is the real outcome."""
    if client.json("GET", f"/v1/instances/{instance_id}")["state"] == "running":
        client.json("POST", f"/v1/instances/{instance_id}/pause")


def seed(api_url: str, *, quiet: bool = False) -> list[Seeded]:
    """Create the demo orgs and drive their usage through the API at `api_url`."""
    staff_token, fleet_token = run_db(_staff_tokens)
    staff, fleet = ApiClient(api_url, staff_token), ApiClient(api_url, fleet_token)
    probe = staff.request_raw("GET", "/v1/test-clock")
    if probe.status_code == 404:
        fail(
            f"the service at {api_url} does not run the test clock; start it with "
            "ORZBOB_TEST_CLOCK=true (e.g. `ORZBOB_TEST_CLOCK=true make run`)"
        )
    if probe.status_code >= 400:
        staff.fail_for(probe)
    made = run_db(_create_orgs(datetime.fromisoformat(probe.json()["now"])))
    seeded = [Seeded(spec, org_id, token) for spec, (org_id, token) in zip(ORGS, made, strict=True)]
    clients = {s.org_id: ApiClient(api_url, s.token) for s in seeded}
    for s in seeded:
        if s.org.spend_limit:
            clients[s.org_id].json(
                "PUT", "/v1/billing/spend-limit", json={"amount": s.org.spend_limit}
            )
    # Start the usage ten days into the period, so forecasts extrapolate from a real stretch
    # of the month instead of a few hours.
    staff.json("POST", "/v1/test-clock/advance", json={"seconds": LEAD_IN_DAYS * 86400})
    minute = 0
    while True:
        beats: list[dict[str, Any]] = []
        for s in seeded:
            client = clients[s.org_id]
            for run in s.org.runs:
                if run.start == minute:
                    body: dict[str, Any] = {"tier": run.tier, "name": run.name}
                    s.instances[run.name] = client.json("POST", "/v1/instances", json=body)["id"]
                elif run.stop == minute and run.name in s.instances:
                    _pause(client, s.instances[run.name])
            for run in s.org.runs:
                if run.name in s.instances and (run.stop is None or minute < run.stop):
                    beats.append({"instance_id": s.instances[run.name], "active": True})
        if beats:
            # One request for every org's beats; one a cap paused is simply listed as paused.
            fleet.json("POST", "/v1/heartbeats", json={"beats": beats})
        if minute >= END_MINUTE:
            break
        # Land exactly on the next start or pause, so every run lasts the minutes it says.
        events = [m for r in _all_runs() for m in (r.start, r.stop) if m is not None]
        upcoming = min([m for m in events if m > minute] + [END_MINUTE])
        step = min(STEP_SECONDS, (upcoming - minute) * MINUTE)
        staff.json("POST", "/v1/test-clock/advance", json={"seconds": step})
        hour_before = minute // 60
        minute += step // MINUTE
        if not quiet and minute // 60 > hour_before:
            err_console.print(f"demo: {minute // 60} h of usage simulated", highlight=False)
    return seeded


def demo(
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="The running service (default: this machine's)."),
    ] = None,
) -> None:
    """Seed five organizations (within allowance, 92 %, overage, free tier used up, near
    a spend limit) through the running service and its test clock, and print their tokens
    for the dashboard."""
    settings = settings_or_exit()
    url = (api_url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    seeded = seed(url)
    console.print(line(("Demo organizations", "bold"), f" at {url}/dashboard:"))
    for s in seeded:
        console.print(
            line("  ", safe(s.org.name, "bold"), safe(f" ({s.org.what}): {s.token}")),
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        "Sign in on the dashboard with a token, or run `orz cloud --token TOKEN billing`.",
        highlight=False,
        soft_wrap=True,
    )


demo_app = typer_app()
demo_app.command("demo")(demo)
