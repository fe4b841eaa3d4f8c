"""The support runbooks cannot rot: every `orz` command they show runs against a test service
(the API over HTTP, its database, and the local Polar server), every SQL statement runs
against this schema, and their escalation limits are the code's."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text, update
from typer.testing import CliRunner

from orzbob.accounts.models import Role
from orzbob.accounts.service import account_service
from orzbob.api.app import create_app
from orzbob.cli.main import app as orz
from orzbob.credits.models import CreditGrant
from orzbob.credits.service import ROLE_LIMITS_CENTS
from orzbob.runtime import Runtime
from tests.docs.runbook_commands import orz_commands, sql_statements
from tests.metering.polar_support import TOKEN, flusher_for, local_polar, make_records
from tests.polar.support import SECRET, use_billing
from tests.quota.usage import Meter
from tests.serving import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "support-runbooks"
# Run in this order: troubleshooting resumes the paused instance that rectifying then kills.
ORDER = ["billing-troubleshooting.md", "rectify-incorrect-charges.md"]
ALL = [*ORDER, "budget-alerts.md"]


@dataclass
class Service:
    env: dict[str, str]
    values: dict[str, str]
    runtime: Runtime

    def fail_alerts(self) -> None:
        """Refused for good by the customer's mail server: the case the runbooks resend.
        Each runbook is its own scenario, so each starts from it."""
        with self.runtime.session() as s:
            s.execute(
                text("UPDATE budget_alerts SET state = 'failed', last_error = :e"),
                {"e": "550 rejected as spam"},
            )


@pytest.fixture
def service(runtime: Runtime, db_url: str, tmp_path: Path) -> Iterator[Service]:
    """A customer org with usage at Polar, a paused instance, a failed credit and staff."""
    with local_polar(tmp_path, accept_future_timestamps=True) as polar:
        use_billing(runtime, polar)
        org_id, _ = make_records(runtime, 3, plan="base-plus-usage")
        # 4 gpu hours: 50 % of the allowance, so there is a budget alert to resend.
        Meter(runtime, org_id).use("gpu", runtime.clock.now() - timedelta(hours=5), 240)
        flusher_for(runtime, runtime.settings).flush()
        now = runtime.clock.now()
        with runtime.session() as s:
            _, org_token = account_service.create_token(
                s, org_id=org_id, role=Role.ADMIN, name="runbook", now=now
            )
            _, staff = account_service.create_token(
                s, org_id=None, role=Role.ENGINEERING, name="runbook", now=now
            )
            record = s.execute(
                text("SELECT id FROM usage_records ORDER BY id LIMIT 1")
            ).scalar_one()
            instance = s.execute(
                text("SELECT id FROM instances WHERE state = 'running' LIMIT 1")
            ).scalar_one()
            alert = s.execute(text("SELECT id FROM budget_alerts LIMIT 1")).scalar_one()
        with serve(create_app(runtime)) as api:
            auth = {"Authorization": f"Bearer {org_token}"}
            staff_auth = {"Authorization": f"Bearer {staff}"}
            r = httpx.post(f"{api}/v1/instances/{instance}/pause", headers=auth)
            assert r.status_code == 200, r.text
            grant = httpx.post(
                f"{api}/v1/admin/orgs/{org_id}/credits",
                json={"amount": "5.00", "reason": "runbook fixture"},
                headers=staff_auth,
            )
            assert grant.status_code == 201, grant.text
            credit_id = grant.json()["id"]
            with runtime.session() as s:
                s.execute(
                    update(CreditGrant)
                    .where(CreditGrant.id == uuid.UUID(credit_id))
                    .values(polar_state="failed", polar_error="no subscription")
                )
            env = {
                "ORZ_API_URL": api,
                "ORZ_STAFF_TOKEN": staff,
                "ORZ_TOKEN": org_token,
                "DATABASE_URL": db_url,
                "BILLING_ENABLED": "true",
                "POLAR_API_URL": polar,
                "POLAR_API_KEY": TOKEN,
                "POLAR_WEBHOOK_SECRET": SECRET,
                "XDG_CONFIG_HOME": str(tmp_path),
                # Nothing listens here: `orz alerts send` reports the retry and exits cleanly.
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(free_port()),
            }
            values = {
                "$ORG": str(org_id),
                "INSTANCE": str(uuid.UUID(str(instance))),
                "RECORD_ID": str(uuid.UUID(str(record))),
                "CREDIT_ID": credit_id,
                "ALERT_ID": str(uuid.UUID(str(alert))),
                "orz_...": org_token,
            }
            yield Service(env, values, runtime)


def substitute(arg: str, values: dict[str, str]) -> str:
    for placeholder, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        arg = arg.replace(placeholder, value)
    return arg


def test_every_orz_command_in_the_runbooks_runs(service: Service) -> None:
    runner = CliRunner()
    failures, ran = [], 0
    for name in ALL:
        service.fail_alerts()
        for command in orz_commands(RUNBOOKS / name):
            args = [substitute(a, service.values) for a in command.args]
            result = runner.invoke(orz, args, env=service.env)
            ran += 1
            if result.exit_code != 0 or "error:" in result.output:
                failures.append(f"{name}: {command.source}\n  -> {result.output.strip()[:300]}")
                continue
            if command.assigns:
                service.values[f"${command.assigns}"] = json.loads(result.stdout)["id"]
    assert not failures, "\n".join(failures)
    assert ran >= 30  # the runbooks show this many; a parsing slip would show far fewer


def test_every_sql_statement_in_the_runbooks_runs(runtime: Runtime) -> None:
    statements = [s for name in ALL for s in sql_statements(RUNBOOKS / name)]
    assert len(statements) >= 4
    with runtime.session() as s:
        for statement in statements:
            s.execute(text(statement.replace("<org id>", str(uuid.uuid4()))))


def test_runbooks_go_symptom_check_fix_with_the_codes_escalation_limits() -> None:
    for name in ORDER:
        body = (RUNBOOKS / name).read_text()
        for word in ("**Symptom**", "**Check**", "**Fix**"):
            assert body.count(word) >= 3, (name, word)
        for role, needle in ((Role.SUPPORT_L1, "L1"), (Role.SUPPORT_L2, "L2")):
            cents = ROLE_LIMITS_CENTS[role]
            assert cents is not None
            row = next(line for line in body.splitlines() if line.startswith(f"| {needle}"))
            assert f"${cents // 100}.{cents % 100:02d}" in row, (name, row)
        assert ROLE_LIMITS_CENTS[Role.ENGINEERING] is None
        assert re.search(r"^\| L3 .*any amount", body, re.M), name
        assert re.search(r"^\| L4 ", body, re.M), name
    for command in ("orz polar reconcile", "orz metering requeue", "orz support credit grant"):
        assert any(command in (RUNBOOKS / n).read_text() for n in ORDER), command


def test_the_old_runbook_name_points_at_the_new_one() -> None:
    pointer = (RUNBOOKS / "rectifying-incorrect-charges.md").read_text()
    assert "(rectify-incorrect-charges.md)" in pointer and len(pointer.splitlines()) < 10
