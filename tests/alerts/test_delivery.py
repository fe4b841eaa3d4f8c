"""Delivery over real SMTP: outages, crashes, refusals, two senders; nothing lost, nothing
sent twice."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi.testclient import TestClient
from sqlalchemy import update

from orzbob.accounts.models import Org
from orzbob.alerts.local_sink import SinkServer
from orzbob.kit.metrics import REGISTRY
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send, states
from tests.conftest import OrgHandle, advance
from tests.quota.usage import Meter

HALF = 300  # free tier: 300 small-minutes is 50 %


def cross_half(runtime: Runtime, org: OrgHandle) -> None:
    Meter(runtime, org.id).use("small", PERIOD_START, HALF)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_alerts_wait_out_an_smtp_outage_and_are_delivered_once(
    with_jobs: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    runtime = with_jobs
    orgs = [make_org(f"Outage {i}", plan="free-tier", email=f"o{i}@x.test") for i in range(3)]
    smtp.stop()
    for org in orgs:
        cross_half(runtime, org)
    advance(runtime, 3600)  # an hour down: the sender keeps trying, backing off
    for org in orgs:
        row = alerts(runtime, org.id)[("allowance", 50)]
        assert row.state == "pending" and row.attempts >= 4
        assert "cannot reach SMTP" in (row.last_error or "")
    assert metric("orzbob_alerts_unsent") == 3
    assert metric("orzbob_alerts_oldest_unsent_seconds") >= 1800  # as of its last try
    smtp.start()  # back, on the same port
    advance(runtime, 3600)
    advance(runtime, 86400)
    received = mails(smtp)
    assert sorted(m.rcpt_tos[0] for m in received) == ["o0@x.test", "o1@x.test", "o2@x.test"]
    assert all(states(runtime, o.id) == {("allowance", 50): "sent"} for o in orgs)
    assert metric("orzbob_alerts_unsent") == 0


def test_backoff_doubles_with_jitter_and_is_capped(runtime: Runtime) -> None:
    from orzbob.alerts.tasks import sender_for

    sender = sender_for(runtime)
    delays = [sender.delay(n) for n in range(1, 12)]
    assert 15 <= delays[0] <= 45 and 30 <= delays[1] <= 90
    assert all(d <= sender.max_delay * 1.5 for d in delays)
    assert len({round(sender.delay(3), 6) for _ in range(20)}) > 1  # jittered


def _sender_process(db_url: str, smtp_port: int, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "ORZBOB_ENV": "test",
        "ORZBOB_PUBLIC_URL": "https://cloud.orzbob.test",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "orzbob.cli", "alerts", "send", "--once", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_sender_killed_mid_send_resends_the_same_message(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer, db_url: str
) -> None:
    org = make_org("Crashy", plan="free-tier")
    cross_half(runtime, org)
    smtp.handler.data_delay = 60  # the server has the message but has not answered yet
    proc = _sender_process(db_url, smtp.port, "--lease-seconds", "2")
    deadline = time.monotonic() + 60
    while not mails(smtp):
        assert time.monotonic() < deadline and proc.poll() is None, "the sender never sent"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    row = alerts(runtime, org.id)[("allowance", 50)]
    assert row.state == "pending" and row.claimed_by  # it died before recording anything
    smtp.handler.data_delay = 0
    assert send(runtime).sent == 0  # its lease has not run out: nobody takes it over yet
    time.sleep(2.2)
    assert send(runtime).sent == 1
    first, second = mails(smtp)
    assert first.message["Message-ID"] == second.message["Message-ID"] == row.message_id
    assert first.part("plain") == second.part("plain") and first.part("html") == second.part("html")
    assert alerts(runtime, org.id)[("allowance", 50)].state == "sent"
    assert send(runtime).sent == 0 and len(mails(smtp)) == 2  # recorded: never again


def test_two_senders_at_once_deliver_each_alert_once(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer, db_url: str
) -> None:
    n = 40
    orgs = [make_org(f"Pair {i}", plan="free-tier", email=f"p{i}@x.test") for i in range(n)]
    for org in orgs:
        cross_half(runtime, org)
    smtp.handler.data_delay = 0.1
    procs = [_sender_process(db_url, smtp.port, "--batch-size", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ids = [str(m.message["Message-ID"]) for m in mails(smtp)]
    assert len(ids) == n and len(set(ids)) == n
    assert all(states(runtime, o.id) == {("allowance", 50): "sent"} for o in orgs)
    sent = [int(out.split("alerts: ")[1].split(" sent")[0]) for out in outputs]
    assert sum(sent) == n and all(s > 0 for s in sent), outputs


def test_a_5xx_reply_fails_for_good_and_a_4xx_reply_is_retried(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    spam, busy = make_org("Spam", plan="free-tier"), make_org("Busy", plan="free-tier")
    cross_half(runtime, spam)
    smtp.handler.data_reply = "554 5.7.1 Message rejected as spam"
    send(runtime)
    failed_before = metric("orzbob_alerts_failed_total", kind="allowance")
    row = alerts(runtime, spam.id)[("allowance", 50)]
    assert row.state == "failed" and row.last_error == "554 5.7.1 Message rejected as spam"
    smtp.handler.data_reply = None
    smtp.handler.mail_reply = "451 4.3.0 Try again later"
    cross_half(runtime, busy)
    send(runtime)
    row = alerts(runtime, busy.id)[("allowance", 50)]
    assert row.state == "pending" and row.last_error == "451 4.3.0 Try again later"
    assert row.next_attempt_at > runtime.clock.now()
    smtp.handler.mail_reply = None
    runtime.clock.advance(3600)  # type: ignore[attr-defined]
    send(runtime)
    rows = {o.name: alerts(runtime, o.id)[("allowance", 50)] for o in (spam, busy)}
    assert rows["Busy"].state == "sent" and rows["Busy"].attempts == 2
    assert rows["Busy"].smtp_reply and rows["Busy"].smtp_reply.startswith("250 ")
    assert rows["Spam"].state == "failed" and rows["Spam"].attempts == 1  # never retried
    assert len(mails(smtp)) == 1
    assert metric("orzbob_alerts_failed_total", kind="allowance") == failed_before


def test_refused_recipients_are_recorded_and_all_refused_is_undeliverable(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Refused", plan="free-tier", email="gone@x.test")
    smtp.handler.rcpt_replies["gone@x.test"] = "550 5.1.1 No such user"
    cross_half(runtime, org)
    send(runtime)
    row = alerts(runtime, org.id)[("allowance", 50)]
    assert row.state == "undeliverable" and "550 5.1.1 No such user" in (row.last_error or "")
    r = client.put(
        "/v1/orgs/me/contacts",
        headers=org.headers,
        json={"billing_emails": ["gone@x.test", "finance@x.test"]},
    )
    assert r.status_code == 200
    r = client.post(f"/v1/admin/alerts/{row.id}/resend", headers=staff(client, runtime))
    assert r.status_code == 200 and r.json()["state"] == "pending"
    send(runtime)
    row = alerts(runtime, org.id)[("allowance", 50)]
    assert row.state == "sent" and "gone@x.test: 550" in (row.last_error or "")
    assert [m.rcpt_tos for m in mails(smtp)] == [["finance@x.test"]]


def staff(client: TestClient, runtime: Runtime) -> dict[str, str]:
    from orzbob.accounts.service import account_service

    with runtime.session() as s:
        _, raw = account_service.create_token(
            s, org_id=None, role="support_l1", name="s", now=runtime.clock.now()
        )
    return {"Authorization": f"Bearer {raw}"}


def test_no_contact_makes_the_alert_undeliverable_and_visible_in_the_api(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Nobody", plan="free-tier")
    with runtime.session() as s:
        s.execute(update(Org).where(Org.id == org.id).values(billing_emails=[]))
    cross_half(runtime, org)
    send(runtime)
    assert mails(smtp) == []
    body = client.get("/v1/billing/alerts", headers=org.headers).json()
    assert body["period_start"] == "2026-03-10T00:00:00Z"
    [alert] = body["alerts"]
    assert (alert["kind"], alert["threshold"], alert["state"]) == ("allowance", 50, "undeliverable")
    assert alert["last_error"] == "The organization has no billing contact."
    last = client.get("/v1/billing", headers=org.headers).json()["last_alert"]
    assert last["state"] == "undeliverable" and last["sent_at"] is None
    assert "Nobody has used 50%" in last["subject"]


def test_an_org_name_with_html_is_escaped_in_the_html_part(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    name = '<script>alert("x")</script> & <b>Sons</b>'
    org = make_org(name, plan="free-tier")
    cross_half(runtime, org)
    send(runtime)
    [msg] = mails(smtp)
    html, text = msg.part("html"), msg.part("plain")
    assert "<script>" not in html and "<b>Sons</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;Sons&lt;/b&gt;" in html
    assert name in text and name in str(msg.message["Subject"])


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"mailer",
        b"s3cr3t-pw",
    )
    return AuthResult(success=ok, handled=False)  # unhandled failure: aiosmtpd answers 535


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_works_and_a_refused_login_waits_without_logging_the_password(
    runtime: Runtime, make_org: Callable[..., OrgHandle], caplog: pytest.LogCaptureFixture
) -> None:
    from pydantic import SecretStr

    with SinkServer(authenticator=_auth, auth_required=True) as server:
        org = make_org("Auth", plan="free-tier")
        cross_half(runtime, org)
        runtime.settings = runtime.settings.model_copy(
            update={
                "smtp_port": server.port,
                "smtp_username": "mailer",
                "smtp_password": SecretStr("wrong-pw-123"),
            }
        )
        runtime.alert_sender = None
        with caplog.at_level(logging.DEBUG):
            report = send(runtime)
        assert report.stopped and report.sent == 0
        row = alerts(runtime, org.id)[("allowance", 50)]
        assert row.state == "pending" and "mailer" in (row.last_error or "")
        for secret in ("wrong-pw-123", base64.b64encode(b"\0mailer\0wrong-pw-123").decode()):
            assert secret not in caplog.text and secret not in (row.last_error or "")
        runtime.settings = runtime.settings.model_copy(
            update={"smtp_password": SecretStr("s3cr3t-pw")}
        )
        runtime.alert_sender = None
        runtime.clock.advance(3600)  # type: ignore[attr-defined]
        assert send(runtime).sent == 1
        assert len(server.handler.received()) == 1


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_starttls_when_configured_and_a_server_that_requires_it_waits_otherwise(
    runtime: Runtime, make_org: Callable[..., OrgHandle], tls_cert: tuple[Path, Path]
) -> None:
    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    with SinkServer(tls_context=context, require_starttls=True) as server:
        org = make_org("Secure", plan="free-tier")
        cross_half(runtime, org)
        runtime.settings = runtime.settings.model_copy(update={"smtp_port": server.port})
        runtime.alert_sender = None
        report = send(runtime)  # plain text to a server that requires TLS: a setting to fix
        assert report.stopped and "530" in report.stopped
        row = alerts(runtime, org.id)[("allowance", 50)]
        assert row.state == "pending" and "530" in (row.last_error or "")
        runtime.settings = runtime.settings.model_copy(
            update={"smtp_starttls": True, "smtp_ca_file": cert}
        )
        runtime.alert_sender = None
        runtime.clock.advance(3600)  # type: ignore[attr-defined]
        assert send(runtime).sent == 1
        assert len(server.handler.received()) == 1
