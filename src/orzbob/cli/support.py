"""`orz support …`: the HTTP support commands plus `orz support alerts`."""

from __future__ import annotations

from orzbob.cli import alerts
from orzbob.cli.billing import support_app

support_app.command("alerts")(alerts.support_alerts)

__all__ = ["support_app"]
