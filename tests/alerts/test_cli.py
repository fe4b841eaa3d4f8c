"""`orz support alerts` over real HTTP, `orz dev mail` and its sink, `orz alerts examples`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from orzbob.alerts.local_sink import SinkServer
from orzbob.cli.dev import local_mail_for_dev
from orzbob.cli.main import app as orz
from orzbob.config import Settings
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send
from tests.conftest import OrgHandle
from tests.quota.usage import Meter
from tests.serving import serve as run_in_thread

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts"


def test_support_alerts_lists_and_resends(
    app: FastAPI,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    smtp: SinkServer,
    tmp_path: Path,
) -> None:
    org = make_org("[bold]Markup[/bold] Co", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START, 570)
    send(runtime)
    token = staff_headers("support_l1")["Authorization"].removeprefix("Bearer ")
    runner = CliRunner()
    env = {"XDG_CONFIG_HOME": str(tmp_path), "ORZ_TOKEN": "", "COLUMNS": "250"}
    with run_in_thread(app) as url:

        def orz_support(*args: str) -> str:
            result = runner.invoke(
                orz, ["support", "--api-url", url, "--token", token, "alerts", *args], env=env
            )
            assert result.exit_code == 0, result.output
            return result.stdout

        out = orz_support("--org", str(org.id))
        assert "sent" in out and "covered by" in out and "ops@acme.test" in out
        page = json.loads(orz_support("--org", str(org.id), "--json"))
        sent = next(a for a in page["alerts"] if a["state"] == "sent")
        assert "[bold]Markup[/bold] Co has used 90%" in sent["subject"]
        out = orz_support("--org", str(org.id), "--resend", sent["id"])
        assert f"Alert {sent['id']} (90% allowance) is queued again" in out
        result = runner.invoke(
            orz, ["support", "--api-url", url, "--token", token, "alerts", "--org", "nope"], env=env
        )
        assert result.exit_code == 1 and "UUID" in result.stderr
    send(runtime)
    assert len(mails(smtp)) == 2
    assert alerts(runtime, org.id)[("allowance", 90)].state == "sent"


def _mail(port: int, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "billing@orzbob.test", "dev@x.test", subject
    msg["Date"] = "Tue, 10 Mar 2026 12:00:00 +0000"
    msg.set_content("plain body")
    msg.add_alternative("<p>html <b>body</b></p>", subtype="html")
    asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=port, start_tls=False))


def test_orz_dev_runs_a_mail_sink_shown_on_a_page_and_by_orz_dev_mail(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with local_mail_for_dev(settings, smtp_port=0, web_port=0) as dev:
        assert dev.smtp_host == "127.0.0.1" and dev.smtp_port not in (0, settings.smtp_port)
        _mail(dev.smtp_port, "Hello <there> & you")
        web = capsys.readouterr().out.split("messages at ")[1].split()[0]
        assert "Hello &lt;there&gt; &amp; you" in httpx.get(web, timeout=5).text
    with pytest.raises(httpx.ConnectError):
        httpx.get(web, timeout=2)
    runner = CliRunner()
    listed = runner.invoke(orz, ["dev", "mail"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "Hello <there> & you" in listed.stdout
    shown = runner.invoke(orz, ["dev", "mail", "--show", "1"])
    assert shown.exit_code == 0 and "plain body" in shown.stdout
    html = runner.invoke(orz, ["dev", "mail", "--show", "1", "--html"])
    assert "<p>html <b>body</b></p>" in html.stdout
    missing = runner.invoke(orz, ["dev", "mail", "--show", "5"])
    assert missing.exit_code == 1 and "no message 5" in missing.stderr


def test_the_sink_page_lists_and_shows_messages(smtp: SinkServer) -> None:
    from orzbob.alerts.local_sink import viewer_app

    _mail(smtp.port, "<script>x</script>")
    with run_in_thread(viewer_app(smtp.handler)) as url:
        index = httpx.get(url + "/").text
        assert "&lt;script&gt;x&lt;/script&gt;" in index and "<script>x" not in index
        [item] = httpx.get(url + "/api/messages").json()
        assert item["subject"] == "<script>x</script>" and item["to"] == ["dev@x.test"]
        assert httpx.get(f"{url}/messages/{item['key']}/text").text.strip() == "plain body"
        assert "<b>body</b>" in httpx.get(f"{url}/messages/{item['key']}/html").text
        assert httpx.get(f"{url}/messages/nope/html").status_code == 404


def test_the_examples_in_docs_are_what_the_templates_render(tmp_path: Path) -> None:
    result = CliRunner().invoke(orz, ["alerts", "examples", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rendered = sorted(p.name for p in tmp_path.iterdir())
    assert rendered == sorted(p.name for p in DOCS.iterdir() if p.name != "README.md")
    for name in rendered:
        assert (tmp_path / name).read_text() == (DOCS / name).read_text(), (
            f"docs/alerts/{name} is stale: run `orz alerts examples`"
        )
    free = (tmp_path / "allowance-100-free-tier.txt").read_text()
    assert "instances are paused until the period resets" in free
    paid = (tmp_path / "allowance-100-base-plus-usage.txt").read_text()
    assert "Overage has started" in paid and "$2.08 an hour" in paid
    assert "your instances pause" in (tmp_path / "spend-limit-80.txt").read_text()


def test_the_mail_sink_never_starts_in_production(settings: Settings) -> None:
    import typer

    production = settings.model_copy(update={"env": "production", "test_clock": False})
    with pytest.raises(typer.Exit), local_mail_for_dev(production, smtp_port=0, web_port=0):
        pass  # pragma: no cover - refused before it yields
