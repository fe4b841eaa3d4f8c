"""One example of each alert e-mail, rendered by `orz alerts examples` into docs/alerts/ so
the documentation always shows what the templates really send."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orzbob.alerts.content import build_message, subject_for
from orzbob.alerts.evaluator import message_id
from orzbob.catalog.models import Catalog
from orzbob.kit.money import format_usd

EXAMPLE_ORG = "Acme Robotics"
_AT = datetime(2026, 3, 24, 15, 42, tzinfo=UTC)
_ID = "01900000-0000-7000-8000-00000000a1e7"


def _facts(catalog: Catalog, plan_id: str, **numbers: Any) -> dict[str, Any]:
    plan = catalog.plan(plan_id)
    return {
        "org_name": EXAMPLE_ORG,
        "plan_id": plan.id,
        "plan_name": plan.name,
        "hard_stop": plan.after_allowance == "hard_stop",
        "hours_included": str(plan.included_small_hours),
        "spend_limit": None,
        "spend_percent": None,
        "period_start": "2026-03-10T00:00:00+00:00",
        "reset_date": "2026-04-10T00:00:00+00:00",
        "rates": [
            {"name": t.name, "rate": f"${t.hourly_rate}", "weight": t.small_hour_weight}
            for t in catalog.tiers
            if plan.allows_tier(t.id)
        ],
        "upgrades": [
            {
                "name": p.name,
                "base": format_usd(p.monthly_base),
                "included_hours": p.included_small_hours,
            }
            for p in catalog.plans
            if p.visibility == "public" and p.id != plan.id and p.bills_overage
        ],
        "has_polar_customer": False,
        **numbers,
    }


def examples(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """name -> facts, one per kind of e-mail a customer can receive."""
    return {
        "allowance-50-free-tier": _facts(
            catalog, "free-tier", kind="allowance", threshold=50, hours_used="5.00",
            percent_used="50.00", estimate="$0.00", forecast_hours="10.71",
            forecast_bill="$0.00", runs_out_at="2026-04-08T06:10:00+00:00",
        ),
        "allowance-100-free-tier": _facts(
            catalog, "free-tier", kind="allowance", threshold=100, hours_used="10.00",
            percent_used="100.00", estimate="$0.00", forecast_hours="21.42",
            forecast_bill="$0.00",
        ),
        "allowance-90-base-plus-usage": _facts(
            catalog, "base-plus-usage", kind="allowance", threshold=90, hours_used="180.00",
            percent_used="90.00", estimate="$20.00", forecast_hours="385.71",
            forecast_bill="$35.45", runs_out_at="2026-03-26T09:20:00+00:00",
        ),
        "allowance-100-base-plus-usage": _facts(
            catalog, "base-plus-usage", kind="allowance", threshold=100, hours_used="200.00",
            percent_used="100.00", estimate="$20.00", forecast_hours="428.57",
            forecast_bill="$38.97",
        ),
        "spend-limit-80": _facts(
            catalog, "base-plus-usage", kind="spend_limit", threshold=80, hours_used="260.00",
            percent_used="130.00", estimate="$40.00", spend_limit="$50.00",
            spend_percent="80.00", forecast_hours="557.14", forecast_bill="$62.86",
        ),
        "spend-limit-100": _facts(
            catalog, "base-plus-usage", kind="spend_limit", threshold=100, hours_used="290.00",
            percent_used="145.00", estimate="$50.00", spend_limit="$50.00",
            spend_percent="100.00", forecast_hours="621.42", forecast_bill="$70.00",
        ),
    }  # fmt: skip


def write_examples(catalog: Catalog, out: Path, *, manage_url: str) -> list[Path]:
    """Write <name>.txt, <name>.html and <name>.eml for every example; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, facts in examples(catalog).items():
        msg = build_message(
            facts,
            subject=subject_for(facts),
            message_id=message_id(uuid.UUID(_ID), 1),
            sender="Orzbob Cloud Billing <billing@orzbob.cloud>",
            recipients=["billing@acme-robotics.example"],
            created_at=_AT,
            manage_url=manage_url,
            alert_id=_ID,
        )
        msg.set_boundary("orzbob-example-boundary")  # stable files: no random boundary
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        for suffix, content in (
            ("txt", f"Subject: {msg['Subject']}\n\n{text.get_content()}"),
            ("html", html.get_content()),
            ("eml", msg.as_string()),
        ):
            path = out / f"{name}.{suffix}"
            path.write_text(content)
            written.append(path)
    return written
