"""Spend-limit alerts: 80 % and 100 % once each; setting or raising the limit re-arms them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from orzbob.alerts.local_sink import SinkServer
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send, states, subjects
from tests.conftest import OrgHandle
from tests.quota.usage import Meter

# gpu at $2.08/h: 60 minutes cost $2.08.


def limit(client: TestClient, org: OrgHandle, amount: str | None) -> dict:  # type: ignore[type-arg]
    r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": amount})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_80_and_100_percent_are_sent_once_each_and_raising_the_limit_rearms_them(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Spendy", plan="usage-only")
    meter = Meter(runtime, org.id)
    limit(client, org, "10.00")
    at = PERIOD_START
    for minutes in (200, 40, 30, 30):  # $6.93, $8.32 (80 %), $9.36, $10.40 (100 %)
        meter.use("gpu", at, minutes)
        at += timedelta(minutes=minutes)
        send(runtime)
    assert [s.split("reached ")[1][:4] for s in subjects(smtp)] == ["80% ", "100%"]
    assert "$10.00 spend limit" in subjects(smtp)[0]
    assert "instances are paused" in subjects(smtp)[1]
    text = mails(smtp)[0].part("plain")
    assert "estimated bill for this period is $8.32" in text
    assert "When the estimated bill reaches $10.00, your instances pause" in text
    assert "your instances are paused" in mails(smtp)[1].part("html")
    meter.use("gpu", at, 60)
    at += timedelta(minutes=60)
    send(runtime)
    assert len(mails(smtp)) == 2  # past 100 % already: nothing more

    body = limit(client, org, "20.00")  # $12.48 is below 80 % of $20: both re-arm
    assert body["last_alert"] is None  # nothing in force any more
    assert states(runtime, org.id) == {
        ("spend_limit", 80): "rearmed",
        ("spend_limit", 100): "rearmed",
    }
    for minutes in (120, 120):  # $16.64 (83 %), $20.80 (104 %)
        meter.use("gpu", at, minutes)
        at += timedelta(minutes=minutes)
        send(runtime)
    assert len(mails(smtp)) == 4
    assert "$20.00 spend limit" in subjects(smtp)[2] and "80%" in subjects(smtp)[2]
    assert "100%" in subjects(smtp)[3]
    ids = [str(m.message["Message-ID"]) for m in mails(smtp)]
    assert len(set(ids)) == 4
    rows = alerts(runtime, org.id)
    assert rows[("spend_limit", 80)].generation == 2 and rows[("spend_limit", 80)].state == "sent"


def test_a_limit_set_below_the_estimate_alerts_at_once_and_a_small_raise_keeps_80(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Base", plan="base-plus-usage")  # $20 base is the estimate already
    limit(client, org, "22.00")  # 90 %: the 80 % threshold is crossed as it is set
    send(runtime)
    assert len(mails(smtp)) == 1 and "80%" in subjects(smtp)[0]
    limit(client, org, "24.00")  # still past 80 % of $24 ($19.20): 80 % stays, 100 % armed
    send(runtime)
    assert len(mails(smtp)) == 1
    assert states(runtime, org.id) == {("spend_limit", 80): "sent"}
    limit(client, org, "19.00")  # lowered below the estimate: 100 %
    send(runtime)
    assert len(mails(smtp)) == 2 and "100%" in subjects(smtp)[1]


def test_removing_the_limit_cancels_an_unsent_spend_alert(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Remover", plan="base-plus-usage")
    smtp.stop()  # the alert cannot go out yet
    limit(client, org, "22.00")
    send(runtime)
    assert states(runtime, org.id) == {("spend_limit", 80): "pending"}
    limit(client, org, None)
    smtp.start()
    send(runtime)
    assert mails(smtp) == []
    assert states(runtime, org.id) == {("spend_limit", 80): "rearmed"}
