"""Thresholds are crossed as usage is written, each sent once, over real SMTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.utils import parsedate_to_datetime

from fastapi.testclient import TestClient

from orzbob.alerts.local_sink import SinkServer
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send, states, subjects
from tests.conftest import T0, OrgHandle, advance
from tests.quota.usage import Meter, move_clock_to


def small_allowance(runtime: Runtime, hours: int = 1) -> None:
    """The free tier with a 1 small-hour allowance, so a test walks it minute by minute."""
    cat = runtime.catalog
    plans = tuple(
        p.model_copy(update={"included_small_hours": hours}) if p.id == "free-tier" else p
        for p in cat.plans
    )
    runtime.catalog = cat.model_copy(update={"plans": plans})


def test_usage_from_0_to_100_percent_sends_three_emails_each_as_it_is_crossed(
    client: TestClient, with_jobs: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    runtime = with_jobs
    small_allowance(runtime)
    org = make_org("Acme", plan="free-tier", email="ops@acme.test")
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    seen: dict[int, int] = {}
    for minute in range(1, 71):
        # The agent beats just before each checkpoint, so minute k is recorded at T0 + k min.
        advance(runtime, 59)
        assert client.post(
            f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True}
        ).is_success
        advance(runtime, 1)
        seen[minute] = len(mails(smtp))
    # 50 % of 60 small-minutes at minute 30, 90 % at 54, 100 % at 60; nothing after.
    changes = [m for m in range(2, 71) if seen[m] != seen[m - 1]]
    assert changes == [30, 54, 60] and seen[1] == 0 and seen[70] == 3
    received = mails(smtp)
    rows = alerts(runtime, org.id)
    for msg, (threshold, minute) in zip(received, [(50, 30), (90, 54), (100, 60)], strict=True):
        crossed = T0 + timedelta(minutes=minute)
        row = rows[("allowance", threshold)]
        assert row.state == "sent" and row.created_at == row.sent_at == crossed
        m = msg.message
        assert parsedate_to_datetime(str(m["Date"])) == crossed
        assert m["Message-ID"] == row.message_id
        assert f"Acme has used {threshold}% of its included hours" in str(m["Subject"])
        assert msg.rcpt_tos == ["ops@acme.test"] and m["To"] == "ops@acme.test"
        hours = f"{minute / 60:.2f}"
        text, html = msg.part("plain"), msg.part("html")
        assert f"Hours used:      {hours} of 1 small-hours ({threshold}.00 %)" in text
        assert f"<strong>{hours}</strong> of 1 small-hours ({threshold}.00 %)" in html
        for body in (text, html):
            assert "Acme" in body and "April 10, 2026" in body and "$0.00" in body
            assert "https://cloud.orzbob.test/" in body
    last_text, last_html = received[-1].part("plain"), received[-1].part("html")
    assert "instances are paused until the period resets on April 10, 2026" in last_text
    assert "Base + Usage: $20.00 a month with 200 small-hours included" in last_text
    assert "your instances are paused until the period resets" in last_html
    assert "instances are paused" in str(received[-1].message["Subject"])
    billing = client.get("/v1/billing", headers=org.headers).json()
    assert billing["last_alert"]["threshold"] == 100 and billing["last_alert"]["state"] == "sent"


def test_a_jump_from_40_to_95_percent_sends_one_email_and_never_the_lower_one(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Jumpco", plan="free-tier")  # 10 small-hours = 600 small-minutes
    meter = Meter(runtime, org.id)
    start = PERIOD_START + timedelta(hours=1)
    meter.use("small", start, 240)  # 40 %
    send(runtime)
    assert mails(smtp) == []
    meter.use("small", start + timedelta(minutes=240), 330)  # one record: 40 % -> 95 %
    send(runtime)
    assert len(subjects(smtp)) == 1 and "90%" in subjects(smtp)[0]
    rows = alerts(runtime, org.id)
    assert states(runtime, org.id) == {("allowance", 50): "covered", ("allowance", 90): "sent"}
    assert rows[("allowance", 50)].covered_by_id == rows[("allowance", 90)].id
    meter.use("small", start + timedelta(minutes=570), 24)  # 99 %
    send(runtime)
    meter.use("small", start + timedelta(minutes=594), 6)  # 100 %
    send(runtime)
    send(runtime)
    assert [s.split("used ")[1][:4] for s in subjects(smtp)] == ["90% ", "100%"]
    assert states(runtime, org.id)[("allowance", 50)] == "covered"


def test_the_catch_up_and_the_usage_path_never_raise_a_threshold_twice(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    from orzbob.alerts.tasks import evaluate_alerts

    org = make_org("Twice", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START, 300)
    assert evaluate_alerts(runtime) != 1  # already raised in the usage transaction
    send(runtime)
    evaluate_alerts(runtime)
    send(runtime)
    assert len(mails(smtp)) == 1


def test_a_new_period_rearms_the_thresholds(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Monthly", plan="free-tier")
    meter = Meter(runtime, org.id)
    meter.use("small", PERIOD_START, 300)
    send(runtime)
    next_period = PERIOD_START.replace(month=4)
    move_clock_to(runtime, next_period + timedelta(hours=8))
    meter.use("small", next_period, 299)
    send(runtime)
    assert len(mails(smtp)) == 1
    meter.use("small", next_period + timedelta(minutes=299), 1)
    send(runtime)
    received = mails(smtp)
    assert len(received) == 2 and all("50%" in str(m.message["Subject"]) for m in received)
    assert received[0].message["Message-ID"] != received[1].message["Message-ID"]
    assert "May 10, 2026" in received[1].part("plain")
    with runtime.session():
        starts = sorted(a.period_start for a in alerts_all(runtime, org))
    assert starts == [PERIOD_START, next_period]


def alerts_all(runtime: Runtime, org: OrgHandle) -> list:  # type: ignore[type-arg]
    from sqlalchemy import select

    from orzbob.alerts.models import BudgetAlert

    with runtime.session() as s:
        return list(s.scalars(select(BudgetAlert).where(BudgetAlert.org_id == org.id)))


def test_an_upgrade_rearms_the_allowance_thresholds_the_new_plan_puts_out_of_reach(
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    smtp: SinkServer,
) -> None:
    org = make_org("Grower", plan="free-tier")
    meter = Meter(runtime, org.id)
    meter.use("small", PERIOD_START, 600)  # 100 % of the free tier
    send(runtime)
    assert len(mails(smtp)) == 1
    r = client.put(
        f"/v1/admin/orgs/{org.id}/plan",
        headers=staff_headers("engineering"),
        json={"plan": "base-plus-usage"},
    )
    assert r.status_code == 200
    # 200 small-hours now: 10 used is 5 %, so 50/90/100 % are back out of reach.
    meter.use("medium", PERIOD_START + timedelta(hours=10), 2700)  # +90 h -> 100 h = 50 %
    send(runtime)
    assert len(mails(smtp)) == 2 and "50%" in subjects(smtp)[1]
    assert "Base + Usage" in mails(smtp)[1].part("plain")
    assert states(runtime, org.id)[("allowance", 90)] == "rearmed"


def test_the_alert_is_written_in_the_usage_transaction_and_rolls_back_with_it(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    import pytest

    from orzbob.accounts.service import account_service
    from orzbob.metering.service import metering_service

    org = make_org("Atomic", plan="free-tier")
    meter = Meter(runtime, org.id)
    drafts = meter.drafts("small", PERIOD_START, 300)
    with pytest.raises(RuntimeError), runtime.session() as s:
        metering_service.record(
            s,
            account_service.get_org(s, org.id),
            drafts,
            catalog=runtime.catalog,
            now=runtime.clock.now(),
        )
        assert set(alerts_in(s, org)) == {("allowance", 50)}  # raised with the usage...
        raise RuntimeError("the usage transaction fails")
    assert alerts(runtime, org.id) == {}  # ...and gone with it
    meter.record(drafts)
    send(runtime)
    assert len(mails(smtp)) == 1


def alerts_in(session: object, org: OrgHandle) -> list[tuple[str, int]]:
    from sqlalchemy import select

    from orzbob.alerts.models import BudgetAlert

    rows = session.scalars(  # type: ignore[attr-defined]
        select(BudgetAlert).where(BudgetAlert.org_id == org.id)
    )
    return [(a.kind, a.threshold) for a in rows]
