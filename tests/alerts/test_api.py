"""Contacts, the alert list, staff resend, last_alert, metrics, jobs and configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from orzbob.accounts.models import Role
from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send, subjects
from tests.conftest import OrgHandle, advance
from tests.quota.usage import Meter


def test_admins_replace_billing_contacts_with_validated_addresses(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Contacts", plan="free-tier")
    member = make_org("Other", role=Role.MEMBER)
    put = lambda h, emails: client.put(  # noqa: E731
        "/v1/orgs/me/contacts", headers=h, json={"billing_emails": emails}
    )
    r = put(org.headers, ["Finance@Contacts.test", "cto@contacts.test", "finance@contacts.test"])
    assert r.status_code == 200
    assert r.json()["billing_emails"] == ["finance@contacts.test", "cto@contacts.test"]
    for bad in ([], ["not-an-address"], [f"a{i}@x.test" for i in range(21)], "a@x.test"):
        r = put(org.headers, bad)
        assert r.status_code == 422 and {"error", "detail"} <= set(r.json()), r.text
    assert put(member.headers, ["m@x.test"]).status_code == 403
    assert client.get("/v1/orgs/me", headers=org.headers).json()["billing_emails"] == [
        "finance@contacts.test",
        "cto@contacts.test",
    ]
    Meter(runtime, org.id).use("small", PERIOD_START, 300)
    send(runtime)
    assert mails(smtp)[0].rcpt_tos == ["finance@contacts.test", "cto@contacts.test"]


def test_the_alert_list_is_this_periods_and_scoped_to_the_org(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    smtp: SinkServer,
) -> None:
    org, other = make_org("Mine", plan="free-tier"), make_org("Theirs", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START, 570)  # 95 %: 90 sent, 50 covered
    send(runtime)
    body = client.get("/v1/billing/alerts", headers=org.headers).json()
    assert [(a["threshold"], a["state"]) for a in body["alerts"]] == [(90, "sent"), (50, "covered")]
    sent, covered = body["alerts"]
    assert covered["covered_by"] == sent["id"] and sent["smtp_reply"].startswith("250 ")
    assert sent["created_at"] == "2026-03-10T12:00:00Z" and sent["recipients"] == ["ops@acme.test"]
    assert client.get("/v1/billing/alerts", headers=other.headers).json()["alerts"] == []
    staff = staff_headers("support_l1")
    assert client.get(f"/v1/admin/orgs/{org.id}/alerts", headers=staff).json() == body
    assert client.get(f"/v1/admin/orgs/{org.id}/alerts", headers=org.headers).status_code == 403
    billing = client.get("/v1/billing", headers=org.headers).json()
    assert billing["last_alert"] == {
        "kind": "allowance",
        "threshold": 90,
        "state": "sent",
        "created_at": "2026-03-10T12:00:00Z",
        "sent_at": "2026-03-10T12:00:00Z",
        "subject": "[Orzbob Cloud] Mine has used 90% of its included hours",
    }
    r = client.post(f"/v1/admin/alerts/{covered['id']}/resend", headers=staff)
    assert r.status_code == 409 and "covered" in r.json()["detail"]
    r = client.post(f"/v1/admin/alerts/{sent['id']}/resend", headers=org.headers)
    assert r.status_code == 403
    r = client.post(f"/v1/admin/alerts/{sent['id']}/resend", headers=staff)
    assert r.status_code == 200 and r.json()["message_id"] != sent["message_id"]
    send(runtime)
    first, again = mails(smtp)
    assert again.message["References"] == first.message["Message-ID"]
    assert again.part("plain") == first.part("plain")
    audit = client.get("/v1/admin/audit", headers=staff, params={"action": "alert.resend"})
    assert audit.json()["entries"][0]["details"]["alert_id"] == sent["id"]


def test_a_base_fee_above_the_limit_is_caught_up_at_a_new_period(
    client: TestClient,
    with_jobs: Runtime,
    make_org: Callable[..., OrgHandle],
    smtp: SinkServer,
) -> None:
    org = make_org("Catchup", plan="base-plus-usage")
    r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "15.00"})
    assert r.status_code == 200
    advance(with_jobs, 60)
    assert len(mails(smtp)) == 1 and "100%" in subjects(smtp)[0]
    # No usage at all next period: the $20 base alone is past the limit again.
    advance(with_jobs, 31 * 86400)
    received = mails(smtp)
    assert len(received) == 2 and "May 10, 2026" in received[1].part("plain")


def test_metrics_count_sent_and_failed_alerts_by_kind(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Metrics", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START, 300)
    send(runtime)
    text = client.get("/metrics").text
    for line in (
        'orzbob_alerts_sent_total{kind="allowance"}',
        "orzbob_alerts_failed_total",
        "orzbob_alerts_unsent 0.0",
        "orzbob_alerts_oldest_unsent_seconds 0.0",
    ):
        assert line in text
    assert "org_id" not in text


def test_alert_jobs_run_after_the_checkpoint(runtime: Runtime) -> None:
    from orzbob.jobs import register_jobs

    register_jobs(runtime)
    names = [j.name for j in runtime.scheduler.jobs]
    assert names.index("metering.checkpoint") < names.index("alerts.catchup")
    assert names.index("alerts.catchup") < names.index("alerts.send")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMAIL_FROM_ADDRESS", "billing at orzbob"),
        ("EMAIL_FROM_ADDRESS", "Billing <billing@orzbob.cloud>\r\nBcc: x@y.test"),
        ("SMTP_PORT", "99999"),
        ("SMTP_PORT", "smtp"),
    ],
)
def test_a_malformed_address_or_port_is_refused_at_start_up_naming_it(
    variable: str, value: str, tmp_path: object
) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, **{variable: value})  # type: ignore[call-arg, arg-type]
    assert variable in str(exc.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP", "EMAIL"))}
    env.update({variable: value, "DATABASE_URL": "sqlite:///:memory:", "SMTP_PASSWORD": "pw-9x7"})
    proc = subprocess.run(
        [sys.executable, "-m", "orzbob.cli", "server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert proc.returncode != 0 and variable in proc.stderr
    assert "Traceback" not in proc.stderr and "pw-9x7" not in proc.stderr + proc.stdout


def test_a_named_sender_address_is_accepted_and_used(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"email_from_address": "Orzbob Billing <billing@orzbob.test>"}
    )
    org = make_org("Named", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START + timedelta(hours=1), 300)
    send(runtime)
    [msg] = mails(smtp)
    assert msg.mail_from == "billing@orzbob.test"
    assert msg.message["From"] == "Orzbob Billing <billing@orzbob.test>"
    assert alerts(runtime, org.id)[("allowance", 50)].state == "sent"


def test_the_example_env_file_is_valid_and_blank_optional_values_are_unset() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    s = Settings(_env_file=example)  # type: ignore[call-arg]
    assert s.smtp_ca_file is None and s.smtp_username is None
    assert s.polar_customer_portal_url is None and s.email_from_mailbox == "billing@orzbob.cloud"


def test_polar_customers_get_the_customer_portal_link(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    from sqlalchemy import update

    from orzbob.accounts.models import Org

    portal = "https://polar.sh/orzbob/portal"
    runtime.settings = runtime.settings.model_copy(update={"polar_customer_portal_url": portal})
    payer, free = make_org("Payer", plan="free-tier"), make_org("Free", plan="free-tier")
    with runtime.session() as s:
        s.execute(update(Org).where(Org.id == payer.id).values(polar_customer_id="cus_1"))
    for org in (payer, free):
        Meter(runtime, org.id).use("small", PERIOD_START, 300)
    send(runtime)
    links = {m.message["Subject"].split("] ")[1].split()[0]: m.part("html") for m in mails(smtp)}
    assert f'href="{portal}"' in links["Payer"]
    assert 'href="https://cloud.orzbob.test/"' in links["Free"]
