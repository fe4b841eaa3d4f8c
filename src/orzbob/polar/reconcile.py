"""Reconciliation: the ledger against Polar's events, one external_id at a time (SPEC §7).

This module compares and explains; `reconcile_service` reads both sides and keeps the run.
Every usage record falls in exactly one class: matched, local only, Polar only or amount
mismatch. Amounts are the billable minutes at the tier's rate, exact `Decimal`, rounded to
the cent once per class total.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from orzbob.catalog.models import Catalog
from orzbob.kit.money import round_cents
from orzbob.metering.models import RecordState, UsageRecord

MATCHED, LOCAL_ONLY, POLAR_ONLY, MISMATCH = "matched", "local_only", "polar_only", "mismatch"
CLASSES = (MATCHED, LOCAL_ONLY, POLAR_ONLY, MISMATCH)
COMPARED = ("tier", "minutes", "billable_minutes", "small_minutes")
# Reports keep every difference up to this many; totals always count them all.
MAX_ITEMS = 1000

EXPLANATIONS = {
    "matched": "the same record with the same figures on both sides",
    "pending": "not yet shipped: the flusher sends it on its next run",
    "dead": "dead-lettered by Polar; fix the cause, then `orz metering requeue`",
    "lost": "marked sent but Polar does not hold it; `orz metering requeue --lost ID`",
    "unknown_record": "Polar holds an event the ledger has no record of",
    "later_cycle": "Polar counts it in a later billing cycle (it was ingested after the "
    "period closed; Polar attributes usage by ingestion time)",
    "metadata_differs": "Polar holds other figures than the ledger sent",
}


@dataclass(frozen=True)
class PolarEvent:
    """What reconciliation needs of one Polar event."""

    polar_id: str
    org_id: str
    timestamp: datetime
    metadata: dict[str, Any]

    @property
    def record_id(self) -> str | None:
        value = self.metadata.get("record_id")
        return str(value) if value is not None else None

    @property
    def fallback_key(self) -> tuple[str, datetime]:
        # Events shipped before the record id rode in the metadata: an instance's
        # records never share an interval end.
        return (str(self.metadata.get("instance_id")), self.timestamp)


@dataclass
class ClassTotal:
    count: int = 0
    minutes: int = 0
    amount: Decimal = Decimal(0)

    def add(self, minutes: int, amount: Decimal) -> None:
        self.count += 1
        self.minutes += minutes
        self.amount += amount

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "minutes": self.minutes,
            "dollars": str(round_cents(self.amount)),
        }


@dataclass
class Item:
    kind: str
    org_id: str
    record_id: str | None
    tier: str | None
    minutes: int
    amount: Decimal
    explanation: str
    detail: str = ""
    ledger: dict[str, Any] | None = None
    polar: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "org_id": self.org_id,
            "record_id": self.record_id,
            "tier": self.tier,
            "minutes": self.minutes,
            "dollars": str(round_cents(self.amount)),
            "explanation": self.explanation,
            "detail": self.detail,
            "ledger": self.ledger,
            "polar": self.polar,
        }


@dataclass
class Report:
    totals: dict[str, ClassTotal] = field(
        default_factory=lambda: {c: ClassTotal() for c in CLASSES}
    )
    explained: dict[str, int] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    omitted: int = 0

    @property
    def drift_minutes(self) -> int:
        """Minutes the two sides disagree on; zero when everything matched."""
        return sum(self.totals[c].minutes for c in (LOCAL_ONLY, POLAR_ONLY, MISMATCH))

    def note(self, item: Item) -> None:
        self.explained[item.explanation] = self.explained.get(item.explanation, 0) + 1
        if item.kind == MATCHED:
            return
        if len(self.items) < MAX_ITEMS:
            self.items.append(item)
        else:
            self.omitted += 1

    def summary(self) -> dict[str, Any]:
        return {
            "totals": {c: t.as_dict() for c, t in self.totals.items()},
            "explained": {
                code: {"count": n, "meaning": EXPLANATIONS[code]}
                for code, n in sorted(self.explained.items())
            },
            "drift_minutes": self.drift_minutes,
            "items_omitted": self.omitted,
        }


def _figures(record: UsageRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in COMPARED}


def _polar_figures(event: PolarEvent) -> dict[str, Any]:
    m = event.metadata
    return {name: (m.get(name) if name == "tier" else _int(m.get(name))) for name in COMPARED}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _amount(catalog: Catalog, tier: str | None, billable_minutes: int | None) -> Decimal:
    if tier is None or not catalog.has_tier(tier) or not billable_minutes:
        return Decimal(0)
    return Decimal(billable_minutes) * catalog.tier(tier).hourly_rate / Decimal(60)


def compare(
    report: Report,
    records: Sequence[UsageRecord],
    events: Iterable[PolarEvent],
    *,
    catalog: Catalog,
    period_end: datetime | None,
) -> None:
    """Sort one org window's records and events into the report's classes.

    `period_end` is when the window's billing period closes: a record shipped after it is
    counted by Polar in the next cycle, which is explained, not a difference.
    """
    by_id = {str(r.id): r for r in records}
    by_key = {(str(r.instance_id), r.interval_end): r for r in records}
    seen: set[str] = set()
    for event in events:
        record = by_id.get(event.record_id or "") or (
            None if event.record_id else by_key.get(event.fallback_key)
        )
        if record is None or str(record.id) in seen:
            report_polar_only(report, event, catalog)
            continue
        seen.add(str(record.id))
        ours, theirs = _figures(record), _polar_figures(event)
        local_amount = _amount(catalog, record.tier, record.billable_minutes)
        if ours != theirs:
            polar_amount = _amount(catalog, theirs["tier"], theirs["billable_minutes"])
            delta = abs((theirs["minutes"] or 0) - record.minutes)
            differs = ", ".join(
                f"{k} {ours[k]} here, {theirs[k]} at Polar"
                for k in COMPARED
                if ours[k] != theirs[k]
            )
            item = Item(
                MISMATCH,
                str(record.org_id),
                str(record.id),
                record.tier,
                delta,
                polar_amount - local_amount,
                "metadata_differs",
                differs,
                ledger=ours,
                polar=theirs,
            )
            report.totals[MISMATCH].add(delta, polar_amount - local_amount)
            report.note(item)
            continue
        later = (
            period_end is not None and record.sent_at is not None and record.sent_at >= period_end
        )
        report.totals[MATCHED].add(record.minutes, local_amount)
        report.note(
            Item(
                MATCHED,
                str(record.org_id),
                str(record.id),
                record.tier,
                record.minutes,
                local_amount,
                "later_cycle" if later else "matched",
            )
        )
    for record in records:
        if str(record.id) in seen:
            continue
        amount = _amount(catalog, record.tier, record.billable_minutes)
        if record.state == RecordState.PENDING.value:
            code, detail = "pending", f"{record.attempts} attempt(s) so far"
        elif record.state == RecordState.DEAD.value:
            code, detail = "dead", record.last_error or "no reason recorded"
        else:
            sent = record.sent_at.isoformat() if record.sent_at else "unknown"
            code, detail = "lost", f"sent at {sent}"
        report.totals[LOCAL_ONLY].add(record.minutes, amount)
        report.note(
            Item(
                LOCAL_ONLY,
                str(record.org_id),
                str(record.id),
                record.tier,
                record.minutes,
                amount,
                code,
                detail,
                ledger=_figures(record),
            )
        )


def report_polar_only(report: Report, event: PolarEvent, catalog: Catalog) -> None:
    theirs = _polar_figures(event)
    minutes = theirs["minutes"] or 0
    amount = _amount(catalog, theirs["tier"], theirs["billable_minutes"])
    report.totals[POLAR_ONLY].add(minutes, amount)
    report.note(
        Item(
            POLAR_ONLY,
            event.org_id,
            event.record_id,
            theirs["tier"],
            minutes,
            amount,
            "unknown_record",
            f"Polar event {event.polar_id} at {event.timestamp.isoformat()}",
            polar=theirs,
        )
    )
