"""The human view with the fields other parts of the service add to GET /v1/billing
(`upcoming`, `last_alert`) and with hostile text in every string the server sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from orzbob.cli.billing_view import days_left, render_billing

RECORDED = Path(__file__).parents[2] / "web" / "test" / "billing.recorded.json"
EVIL = "[bold]\u001b[2J[/]"


def _render(body: dict[str, Any]) -> str:
    console = Console(width=160, record=True, color_system=None, force_terminal=False)
    with console.capture() as capture:
        render_billing(console, body)
    return capture.get()


def test_upcoming_caps_last_alert_and_hostile_strings() -> None:
    body = json.loads(RECORDED.read_text())
    body["organization"] = EVIL
    body["upcoming"] = [
        {
            "cap": "continuous_cap",
            "instance_id": "0190e0e0-0000-7000-8000-000000000001",
            "instance_name": f"box {EVIL}",
            "at": "2026-03-20T23:30:00Z",
            "detail": f"8 h without a pause {EVIL}",
        },
        {
            "cap": "daily_cap",
            "instance_id": None,
            "instance_name": None,
            "at": "2026-03-21T00:00:00Z",
            "detail": "24 instance-hours today",
        },
    ]
    body["last_alert"] = {
        "kind": "allowance",
        "threshold": 90,
        "state": "sent",
        "created_at": "2026-03-18T10:00:00Z",
        "sent_at": "2026-03-18T10:00:05Z",
        "subject": f"You have used 90 % {EVIL}",
    }
    out = _render(body)
    assert "\x1b" not in out
    shown = "[bold]\\x1b[2J[/]"
    assert f"Organization: {shown}" in out
    assert (
        f"continuous-run cap reached (continuous_cap) on box {shown} at 2026-03-20 23:30 UTC: "
        f"8 h without a pause {shown}"
    ) in out
    assert "daily cap of instance-hours reached (daily_cap) at 2026-03-21 00:00 UTC" in out
    assert (
        f"Last alert: allowance 90 % (sent 2026-03-18 10:00 UTC) You have used 90 % {shown}" in out
    )
    assert "As of 2026-03-20 22:00 UTC" in out

    body["last_alert"] = None
    assert "Last alert: none this period" in _render(body)
    del body["last_alert"], body["upcoming"], body["as_of"]
    out = _render(body)  # an older service: the view still works
    assert "Last alert" not in out and "Upcoming caps: none" in out


def test_days_left() -> None:
    assert days_left("2026-04-10T00:00:00Z", "2026-03-10T12:00:00Z") == "in 30 days"
    assert days_left("2026-04-10T00:00:00Z", "2026-04-09T00:00:00Z") == "in 1 day"
    assert days_left("2026-04-10T00:00:00Z", "2026-04-09T19:30:00Z") == "in 4 h"
    assert days_left("2026-04-10T00:00:00Z", "2026-04-09T23:59:00Z") == "in 1 h"
    assert days_left("2026-04-10T00:00:00Z", "2026-04-10T00:00:00Z") == "now"
