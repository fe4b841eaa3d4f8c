"""How the crash proof tells the one expected duplicate alert e-mail (a sender killed with
-9 between the SMTP server accepting a message and the commit that records it) from any
other copy, which fails the proof."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings
from orzbob.runtime import Runtime
from tests.alerts.support import PERIOD_START, alerts, mails, send
from tests.conftest import OrgHandle
from tests.polar_local.polar_local_support import wait_for
from tests.proof.ledger import count_copies
from tests.proof.processes import Proc, sends_in_flight
from tests.quota.usage import Meter


@pytest.fixture
def settings(settings: Settings, smtp: SinkServer) -> Settings:
    return settings.model_copy(update={"smtp_port": smtp.port})


def test_a_sender_killed_mid_send_explains_exactly_one_copy(
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    smtp: SinkServer,
    db_url: str,
    tmp_path: Path,
) -> None:
    org = make_org("Killed mid-send", plan="free-tier")
    Meter(runtime, org.id).use("small", PERIOD_START, 300)  # 50 % of the free tier
    smtp.handler.data_delay = 60  # the server has the message and has not answered yet
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "ORZBOB_ENV": "test",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "ORZBOB_ALERT_LEASE_SECONDS": "1",
    }
    sender = Proc("sender", ["alerts", "send", "--once"], env, tmp_path)
    sender.start()
    wait_for(lambda: mails(smtp), timeout=60)
    sender.kill9()
    smtp.handler.data_delay = 0
    wait_for(lambda: send(runtime).sent, timeout=30)  # once the killed sender's lease lapses
    mid = alerts(runtime, org.id)[("allowance", 50)].message_id
    received = Counter(str(m.message["Message-ID"]) for m in mails(smtp))
    assert received == {mid: 2}
    in_flight = sends_in_flight(sender.killed)
    assert in_flight == {mid: 1}
    assert count_copies(received, in_flight) == (1, 0)
    assert count_copies(received + Counter([mid]), in_flight) == (1, 1)  # a third: a bug
    assert count_copies(received, Counter()) == (0, 1)  # no kill mid-send: a bug


def test_a_run_killed_after_recording_its_last_send_explains_no_copy(tmp_path: Path) -> None:
    log = tmp_path / "worker0-1.log"
    log.write_text(
        "… INFO orzbob.alerts.sender alert 1: sending <a@x>\n"
        "… INFO orzbob.alerts.sender alert 1: <a@x> recorded as sent\n"
        "… INFO orzbob.alerts.sender alert 2: sending <b@x>\n"
        "… INFO orzbob.alerts.sender alert 2: <b@x> recorded as sent\n"
    )
    assert sends_in_flight([log]) == Counter()
    log.write_text(log.read_text() + "… INFO orzbob.alerts.sender alert 3: sending <c@x>\n")
    assert sends_in_flight([log, log]) == {"<c@x>": 2}
