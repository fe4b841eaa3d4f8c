"""What an alert says: the facts snapshotted when it was crossed, its subject, and the
multipart e-mail rendered from Jinja2 templates (HTML autoescaped, plain text as is)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from orzbob.alerts.models import AlertKind
from orzbob.catalog.models import Catalog
from orzbob.kit.money import format_usd
from orzbob.quota.service import QuotaStatus, floor_hundredths

PRODUCT = "Orzbob Cloud"

_env = Environment(
    loader=PackageLoader("orzbob.alerts", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_SPACE = re.compile(r"\s+")


def one_line(value: str) -> str:
    """Header-safe text: an org name with a newline must not start a new header."""
    return _SPACE.sub(" ", value).strip()


def facts_for(
    status: QuotaStatus,
    *,
    kind: AlertKind,
    threshold: int,
    catalog: Catalog,
    has_polar_customer: bool,
) -> dict[str, Any]:
    """Everything the e-mail says, as plain JSON values, at the moment of crossing."""
    plan = status.plan
    limit = status.spend_limit
    spend_percent = (
        floor_hundredths(status.estimate * 100 / limit) if limit is not None and limit > 0 else None
    )
    upgrades = [
        {
            "name": p.name,
            "base": format_usd(p.monthly_base),
            "included_hours": p.included_small_hours,
        }
        for p in catalog.plans
        if p.visibility == "public" and p.id != plan.id and p.bills_overage
    ]
    return {
        "kind": kind.value,
        "threshold": threshold,
        "org_name": status.org_name,
        "plan_id": plan.id,
        "plan_name": plan.name,
        "hard_stop": plan.after_allowance == "hard_stop",
        "hours_used": str(status.hours_used),
        "hours_included": str(plan.included_small_hours),
        "percent_used": str(status.percent_used),
        "estimate": format_usd(status.estimate),
        "spend_limit": None if limit is None else format_usd(limit),
        "spend_percent": None if spend_percent is None else str(spend_percent),
        "forecast_hours": str(floor_hundredths(status.forecast.projected_small_minutes / 60)),
        "forecast_bill": format_usd(status.forecast.projected_bill),
        "runs_out_at": (
            None
            if status.forecast.allowance_runs_out_at is None
            else status.forecast.allowance_runs_out_at.isoformat()
        ),
        "period_start": status.period.start.isoformat(),
        "reset_date": status.period.end.isoformat(),
        "rates": [
            {"name": t.name, "rate": f"${t.hourly_rate}", "weight": t.small_hour_weight}
            for t in catalog.tiers
            if plan.allows_tier(t.id)
        ],
        "upgrades": upgrades,
        "has_polar_customer": has_polar_customer,
    }


def subject_for(facts: dict[str, Any]) -> str:
    org, threshold = one_line(facts["org_name"]), facts["threshold"]
    if facts["kind"] == AlertKind.SPEND_LIMIT.value:
        text = f"{org} has reached {threshold}% of its {facts['spend_limit']} spend limit"
        if threshold >= 100:
            text += ": instances are paused"
    else:
        text = f"{org} has used {threshold}% of its included hours"
        if threshold >= 100:
            text += (
                ": instances are paused until the reset"
                if facts["hard_stop"]
                else ": overage billing has started"
            )
    return f"[{PRODUCT}] {text}"


def _context(facts: dict[str, Any], manage_url: str) -> dict[str, Any]:
    reset = datetime.fromisoformat(facts["reset_date"])
    runs_out = facts.get("runs_out_at")
    return {
        **facts,
        "runs_out": None
        if not runs_out or facts["threshold"] >= 100 or facts["kind"] != "allowance"
        else f"{datetime.fromisoformat(runs_out):%B %-d, %Y %H:%M} UTC",
        "product": PRODUCT,
        "manage_url": manage_url,
        "reset_day": f"{reset:%B} {reset.day}, {reset:%Y}",
        "reset_at": f"{reset:%Y-%m-%d %H:%M} UTC",
        "percent": Decimal(
            facts["spend_percent"] if facts["kind"] == "spend_limit" else facts["percent_used"]
        ),
    }


def render(facts: dict[str, Any], *, manage_url: str) -> tuple[str, str]:
    """(plain text, HTML) bodies of an alert."""
    ctx = _context(facts, manage_url)
    name = facts["kind"]
    return _env.get_template(f"{name}.txt").render(ctx), _env.get_template(f"{name}.html").render(
        ctx
    )


def build_message(
    facts: dict[str, Any],
    *,
    subject: str,
    message_id: str,
    sender: str,
    recipients: list[str],
    created_at: datetime,
    manage_url: str,
    alert_id: str,
) -> EmailMessage:
    """The multipart/alternative e-mail. Everything in it comes from the stored alert, so a
    resend after a crash is byte-for-byte the same message with the same Message-ID."""
    text, html = render(facts, manage_url=manage_url)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(created_at)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Orzbob-Alert"] = alert_id
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg
