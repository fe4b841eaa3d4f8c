"""The human view of a billing object (`orz cloud billing`, `orz support billing`).

Every value comes from the API object as it is; strings from the server go through `safe`
(never markup, controls escaped). Fields other branches add (`upcoming`, `last_alert`) are
shown when present and skipped when absent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orzbob.cli.output import line, safe

# How the status line names each cap: the customer's words, not the cap id.
CAP_REASONS = {
    "quota_exhausted": "allowance used up",
    "spend_limit": "spend limit reached",
    "daily_cap": "daily cap of instance-hours reached",
    "continuous_cap": "continuous-run cap reached",
    "idle": "idle",
}


def _when(value: str | None) -> str:
    """RFC 3339 → "2026-03-10 12:00 UTC"."""
    if not value:
        return "—"
    return f"{_parse(value):%Y-%m-%d %H:%M} UTC"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def days_left(reset: str, as_of: str | None) -> str:
    """ "in 31 days" / "in 1 day" / "in 5 h" / "now" from the reset date and `as_of`."""
    start = _parse(as_of) if as_of else datetime.now(UTC)
    seconds = (_parse(reset) - start).total_seconds()
    if seconds <= 0:
        return "now"
    days = int(seconds // 86400)
    if days >= 1:
        return f"in {days} day{'s' if days != 1 else ''}"
    return f"in {max(1, int(seconds // 3600))} h"


def status_line(b: dict[str, Any]) -> Text:
    """Within allowance / in overage / paused, and why. A free tier past its allowance is
    paused ("allowance used up"); it is never "in overage", since nothing is billed."""
    throttles = b.get("throttles") or []
    if throttles:
        first = throttles[0]
        why = CAP_REASONS.get(first["cap"], str(first["cap"]))
        return line(
            ("Status: ", "bold"), ("paused", "bold red"), f" ({why})\n  ", safe(first["detail"])
        )
    if b["in_overage"]:
        return line(
            ("Status: ", "bold"),
            ("in overage", "bold red"),
            " — usage past the allowance is billed at tier rates",
        )
    if not b["hours_included"]:
        return line(("Status: ", "bold"), "usage only — every minute is billed at tier rates")
    left = max(0.0, b["hours_included"] - b["hours_used"])
    return line(
        ("Status: ", "bold"),
        ("within allowance", "bold green"),
        f" — {left:,.2f} small-hours left",
    )


def _usage_bar(b: dict[str, Any]) -> Table:
    included, used, pct = b["hours_included"], b["hours_used"], b["percent_used"]
    grid = Table.grid(padding=(0, 1))
    if included:
        paused = bool(b.get("throttles"))
        style = "red" if b["in_overage"] or paused else "yellow" if pct >= 90 else "green"
        grid.add_row(
            "Usage",
            ProgressBar(total=100, completed=min(pct, 100), width=40, complete_style=style),
            f"{used:,.2f} / {included:,.0f} small-hours ({pct:.2f} %)",
        )
    else:
        grid.add_row("Usage", f"{used:,.2f} small-hours (no allowance: every minute is billed)")
    return grid


def _tier_table(b: dict[str, Any]) -> Table:
    table = Table("tier", "rate/h", "hours", "included min", "overage min", "billable min", "cost")
    for t in b["tiers"]:
        table.add_row(
            safe(t["name"]),
            safe(f"${t['hourly_rate']}"),
            f"{t['hours']:,.2f}",
            str(t["included_minutes"]),
            str(t["overage_minutes"]),
            str(t["billable_minutes"]),
            safe(f"${t['cost']}"),
        )
    return table


def _upcoming(b: dict[str, Any]) -> list[Text]:
    rows = b.get("upcoming") or []
    if not rows:
        return [line("Upcoming caps: none in the next hour")]
    out = [line("Upcoming caps:")]
    for u in rows:
        who = line(" on ", safe(u["instance_name"])) if u.get("instance_name") else Text("")
        out.append(
            line(
                "  • ",
                (CAP_REASONS.get(u["cap"], "") or "cap", "yellow"),
                safe(f" ({u['cap']})"),
                who,
                f" at {_when(u.get('at'))}: ",
                safe(u.get("detail", "")),
            )
        )
    return out


def _last_alert(b: dict[str, Any]) -> Text | None:
    if "last_alert" not in b:
        return None
    a = b["last_alert"]
    if not a:
        return line("Last alert: none this period")
    sent = f"sent {_when(a['sent_at'])}" if a.get("sent_at") else safe(a.get("state", ""))
    return line(
        "Last alert: ",
        safe(f"{a.get('kind', '')} {a.get('threshold', '')} %"),
        " (",
        sent,
        ") ",
        safe(a.get("subject") or ""),
    )


def render_billing(console: Console, b: dict[str, Any]) -> None:
    """Print the billing object for a person."""
    console.print(
        line(
            ("Organization: ", "bold"),
            safe(b["organization"]),
            "   ",
            ("Plan: ", "bold"),
            safe(b["plan"]),
            safe(f" ({b['plan_id']})"),
        ),
        highlight=False,
    )
    console.print(
        line(
            f"Period {b['period_start'][:10]} → {b['period_end'][:10]}, resets "
            f"{b['reset_date'][:10]} ({days_left(b['reset_date'], b.get('as_of'))})"
        ),
        highlight=False,
    )
    console.print(_usage_bar(b))
    console.print(status_line(b), highlight=False)
    throttle = b["throttle_status"]
    console.print(
        line(f"Today (UTC): {b['daily_usage']}   Throttle: ", safe(throttle)), highlight=False
    )
    for t in (b.get("throttles") or [])[1:]:
        console.print(line(("Also capped ", "red"), safe(f"({t['cap']}): {t['detail']}")))
    for row in _upcoming(b):
        console.print(row, highlight=False)
    console.print(_tier_table(b))
    est, cr, fc = b["estimate"], b["credits"], b["forecast"]
    credit = f" − credits ${est['credits_applied']}" if est["credits_applied"] != "0.00" else ""
    console.print(
        line(
            ("Estimated bill: ", "bold"),
            (f"${est['total']}", "bold"),
            f" (base ${est['base']} + usage ${est['usage']}{credit})",
        ),
        highlight=False,
    )
    runs_out = fc.get("allowance_runs_out_at")
    console.print(
        line(
            f"Forecast at period end: {fc['projected_hours_used']:,.2f} small-hours, "
            f"${fc['projected_bill']}"
            + (f"; allowance runs out {_when(runs_out)}" if runs_out else "")
        ),
        highlight=False,
    )
    console.print(
        line(
            f"Credits: ${cr['granted_this_period']} granted this period, "
            f"${cr['carried_in']} carried in, ${cr['applied']} applied, "
            f"${cr['balance']} left"
        ),
        highlight=False,
    )
    limit = b.get("spend_limit")
    if limit is None:
        console.print("Spend limit: none", highlight=False)
    else:
        share = Decimal(est["total"]) * 100 / Decimal(limit) if Decimal(limit) else None
        used = f", {share:.0f} % used" if share is not None else ""
        console.print(
            line(f"Spend limit: ${limit} (estimated bill ${est['total']}{used})"), highlight=False
        )
    alert = _last_alert(b)
    if alert is not None:
        console.print(alert, highlight=False)
    if b.get("as_of"):
        console.print(line(("As of ", "dim"), (_when(b["as_of"]), "dim")), highlight=False)
