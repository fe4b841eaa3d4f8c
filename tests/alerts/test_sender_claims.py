"""The sender's claims: a lease that is a setting and is renewed while a send is in flight, a
restarted worker taking its own claims back at once, and the outcome of a send recorded even
when the database connection drops right after the SMTP server accepted it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from orzbob.alerts.local_sink import SinkServer
from orzbob.alerts.models import BudgetAlert
from orzbob.alerts.repository import alert_repository
from orzbob.alerts.sender import AlertSender
from orzbob.alerts.tasks import sender_for
from orzbob.config import Settings
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send
from tests.conftest import OrgHandle
from tests.polar_local.polar_local_support import wait_for
from tests.quota.usage import Meter


def cross_half(runtime: Runtime, org: OrgHandle) -> None:
    Meter(runtime, org.id).use("small", PERIOD_START, 300)  # free tier: 50 %


def twin(runtime: Runtime, **settings: Any) -> Runtime:
    """Another process on the same database and clock, with other settings."""
    return Runtime.create(
        runtime.settings.model_copy(update=settings),
        clock=runtime.clock,
        engine=runtime.engine,
        catalog=runtime.catalog,
    )


def test_the_lease_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORZBOB_ALERT_LEASE_SECONDS", "45")
    assert Settings(_env_file=None).alert_lease_seconds == 45  # type: ignore[call-arg]
    monkeypatch.setenv("ORZBOB_ALERT_LEASE_SECONDS", "0")
    with pytest.raises(ValueError, match="ORZBOB_ALERT_LEASE_SECONDS"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_slow_send_keeps_its_lease_so_no_other_sender_sends_it_again(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Slow", plan="free-tier")
    cross_half(runtime, org)
    first = sender_for(twin(runtime, alert_lease_seconds=1))
    assert first.lease == timedelta(seconds=1)
    smtp.handler.data_delay = 3  # three leases pass before the server answers
    sending = threading.Thread(target=first.run)
    sending.start()
    wait_for(lambda: mails(smtp))
    other = AlertSender(
        sessions=runtime.sessions,
        settings=runtime.settings,
        clock=runtime.clock,
        lease=timedelta(seconds=1),
    )
    taken: list[int] = []

    def other_tries() -> bool:
        taken.append(other.run().sent)
        return not sending.is_alive()

    wait_for(other_tries, timeout=60)
    sending.join()
    assert sum(taken) == 0 and len(taken) > 1
    assert len(mails(smtp)) == 1
    assert alerts(runtime, org.id)[("allowance", 50)].state == "sent"


def test_a_restarted_worker_takes_back_its_own_claims_at_once(
    runtime: Runtime, make_org: Callable[..., OrgHandle], smtp: SinkServer
) -> None:
    org = make_org("Restarted", plan="free-tier")
    cross_half(runtime, org)
    # Worker w1 claimed the alert and was killed before it sent anything.
    with runtime.session() as s:
        s.execute(
            update(BudgetAlert).values(
                claimed_by="w1",
                claim_expires_at=datetime.now(UTC) + timedelta(minutes=10),
                attempts=1,
            )
        )
    assert sender_for(twin(runtime, worker_id="w2")).run().sent == 0  # w1's lease holds
    assert sender_for(twin(runtime, worker_id="w1")).run().sent == 1  # w1 is back: at once
    (mail,) = mails(smtp)
    row = alerts(runtime, org.id)[("allowance", 50)]
    assert row.state == "sent" and mail.message["Message-ID"] == row.message_id


def test_a_connection_dropped_after_the_smtp_reply_does_not_send_the_alert_twice(
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    smtp: SinkServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = make_org("Cut", plan="free-tier")
    cross_half(runtime, org)
    real, calls = alert_repository.finish_claim, []

    def dropped_once(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:  # as pg_terminate_backend does to the connection
            raise OperationalError("UPDATE budget_alerts", {}, Exception("connection lost"))
        return real(*args, **kwargs)

    monkeypatch.setattr(alert_repository, "finish_claim", dropped_once)
    sender = sender_for(runtime)
    assert sender.run().sent == 1
    row = alerts(runtime, org.id)[("allowance", 50)]
    assert row.state == "sent" and row.claimed_by is None
    sender.lease = timedelta(0)  # even with no lease left, nothing goes again
    assert send(runtime).sent == 0
    assert len(mails(smtp)) == 1
