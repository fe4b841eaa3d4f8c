"""`orz polar sync`: make Polar's meters and products match the catalog, idempotently.

Polar objects are ours when their metadata says so (`orzbob_meter: <tier>` on meters,
`orzbob_plan: <plan id>` on products); nothing else is read, changed or archived, and no
Polar id is stored on our side: whoever needs a product's plan reads the product metadata
(webhooks carry it) or lists products by it.

Order matters: meters first (prices point at them), then products, then meters of tiers that
left the catalog, once no product of ours prices them any more.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from polar.v2026_10.outputs import Meter, Product

from orzbob.catalog.models import Catalog, Plan
from orzbob.kit.money import to_cents
from orzbob.metering.flusher import EVENT_NAME
from orzbob.polar.client import PolarGateway

log = logging.getLogger(__name__)

METER_KEY = "orzbob_meter"
PLAN_KEY = "orzbob_plan"
CURRENCY = "usd"
# Polar keeps metered unit amounts as NUMERIC(17, 12): cents per unit, 12 decimal places.
UNIT_AMOUNT_PLACES = Decimal("0.000000000001")


def unit_amount(hourly_rate: Decimal) -> Decimal:
    """Cents per minute for an hourly dollar rate, rounded half-up to 12 decimal places."""
    return (hourly_rate * 100 / 60).quantize(UNIT_AMOUNT_PLACES, rounding=ROUND_HALF_UP)


# -- desired state --------------------------------------------------------------------------
@dataclass(frozen=True)
class MeterSpec:
    tier: str
    name: str
    filter: dict[str, Any]
    aggregation: dict[str, Any]

    @property
    def metadata(self) -> dict[str, str]:
        return {METER_KEY: self.tier}


@dataclass(frozen=True)
class PriceSpec:
    """A fixed monthly price (`cents`, 0 = free) or a per-minute price on a tier's meter."""

    cents: int | None = None
    tier: str | None = None
    per_minute: Decimal | None = None

    def describe(self) -> str:
        if self.tier is None:
            return "free" if self.cents == 0 else f"fixed ${Decimal(self.cents or 0) / 100:.2f}"
        return f"{self.tier} {_cents(self.per_minute)}¢/min"


@dataclass(frozen=True)
class ProductSpec:
    plan: str
    name: str
    visibility: str
    prices: tuple[PriceSpec, ...]

    @property
    def metadata(self) -> dict[str, str]:
        return {PLAN_KEY: self.plan}


def meter_specs(catalog: Catalog) -> dict[str, MeterSpec]:
    """One meter per tier: the sum of `billable_minutes` of that tier's compute events."""
    return {
        t.id: MeterSpec(
            tier=t.id,
            name=f"{t.name} instance minutes",
            filter={
                "conjunction": "and",
                "clauses": [
                    {"property": "name", "operator": "eq", "value": EVENT_NAME},
                    {"property": "tier", "operator": "eq", "value": t.id},
                ],
            },
            aggregation={"func": "sum", "property": "billable_minutes"},
        )
        for t in catalog.tiers
    }


def price_specs(catalog: Catalog, plan: Plan) -> tuple[PriceSpec, ...]:
    """A fixed price for a monthly base, a metered price per tier when overage is billed, and
    a single free price when neither (Polar allows a free price with nothing else)."""
    prices: list[PriceSpec] = []
    if plan.monthly_base > 0:
        prices.append(PriceSpec(cents=to_cents(plan.monthly_base)))
    if plan.bills_overage:
        for tier_id in plan.tiers:
            rate = catalog.tier(tier_id).hourly_rate
            if rate > 0:  # Polar refuses a zero unit amount; a free tier needs no price
                prices.append(PriceSpec(tier=tier_id, per_minute=unit_amount(rate)))
    return tuple(prices) or (PriceSpec(cents=0),)


def product_specs(catalog: Catalog) -> dict[str, ProductSpec]:
    return {
        p.id: ProductSpec(
            plan=p.id, name=p.name, visibility=p.visibility, prices=price_specs(catalog, p)
        )
        for p in catalog.plans
    }


# -- report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    action: str  # create | update | archive | unarchive
    kind: str  # meter | product
    key: str  # tier or plan id
    polar_id: str | None
    detail: str

    def line(self) -> str:
        ref = f" ({self.polar_id})" if self.polar_id else ""
        return f"{self.action} {self.kind} {self.key}{ref}: {self.detail}"


@dataclass
class SyncReport:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meters: dict[str, str] = field(default_factory=dict)
    products: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "changed": bool(self.changes),
            "changes": [dataclasses.asdict(c) for c in self.changes],
            "warnings": self.warnings,
            "meters": self.meters,
            "products": self.products,
        }


# -- reconciliation -------------------------------------------------------------------------
def _ours(objects: list[Any], key: str, report: SyncReport, kind: str) -> dict[str, Any]:
    """Our objects by metadata value: a live one wins over an archived one, then the oldest
    (lists come oldest first). Extra live copies are reported, never touched."""
    chosen: dict[str, Any] = {}
    for obj in objects:
        value = obj.metadata.get(key)
        if not isinstance(value, str):
            continue
        current = chosen.get(value)
        if current is None or (_archived(current) and not _archived(obj)):
            chosen[value] = obj
        elif not _archived(obj):
            report.warnings.append(
                f"{kind} {obj.id} duplicates {kind} {current.id} ({key}={value}); "
                "left untouched: archive it in Polar if it is unused"
            )
    return chosen


def _archived(obj: Any) -> bool:
    if isinstance(obj, Meter):
        return obj.archived_at is not None
    return bool(obj.is_archived)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class CatalogSync:
    def __init__(self, gateway: PolarGateway) -> None:
        self.gateway = gateway

    def run(self, catalog: Catalog, *, dry_run: bool = False) -> SyncReport:
        report = SyncReport(dry_run=dry_run)
        existing_meters = self.gateway.list_meters()
        meters = _ours(existing_meters, METER_KEY, report, "meter")
        wanted_meters = meter_specs(catalog)
        for tier, spec in wanted_meters.items():
            meter_id = self._sync_meter(spec, meters.get(tier), report)
            if meter_id:
                report.meters[tier] = meter_id
        products = _ours(self.gateway.list_products(), PLAN_KEY, report, "product")
        for plan, pspec in product_specs(catalog).items():
            product_id = self._sync_product(pspec, products.get(plan), report)
            if product_id:
                report.products[plan] = product_id
        for plan, product in products.items():
            if plan not in report.products and not product.is_archived:
                self._change(report, "archive", "product", plan, product.id, "not in the catalog")
                if not dry_run:
                    self.gateway.update_product(product.id, is_archived=True)
        for tier, meter in meters.items():
            if tier not in wanted_meters and meter.archived_at is None:
                self._change(report, "archive", "meter", tier, meter.id, "not in the catalog")
                if not dry_run:
                    self.gateway.update_meter(meter.id, is_archived=True)
        return report

    def _change(
        self, report: SyncReport, action: str, kind: str, key: str, pid: str | None, detail: str
    ) -> None:
        change = Change(action, kind, key, pid, detail)
        report.changes.append(change)
        log.info("polar sync%s: %s", " (dry run)" if report.dry_run else "", change.line())

    # -- meters ------------------------------------------------------------------------
    def _sync_meter(self, spec: MeterSpec, meter: Meter | None, report: SyncReport) -> str | None:
        body: dict[str, Any] = {
            "name": spec.name,
            "filter": spec.filter,
            "aggregation": spec.aggregation,
            "metadata": spec.metadata,
        }
        if meter is None:
            self._change(report, "create", "meter", spec.tier, None, f"{spec.name!r}")
            if report.dry_run:
                return None
            return self.gateway.create_meter(unit="scalar", **body).id
        diffs = {
            key: value
            for key, value in body.items()
            if _plain(getattr(meter, key)) != value
            and not (key == "metadata" and value.items() <= meter.metadata.items())
        }
        if meter.archived_at is not None:
            diffs["is_archived"] = False
        if diffs:
            what = ", ".join("unarchived" if k == "is_archived" else k for k in diffs)
            self._change(report, "update", "meter", spec.tier, meter.id, what)
            if not report.dry_run:
                if "metadata" in diffs:  # keep metadata others added; ours wins on our key
                    diffs["metadata"] = {**meter.metadata, **spec.metadata}
                self.gateway.update_meter(meter.id, **diffs)
        return meter.id

    # -- products ----------------------------------------------------------------------
    def _price_body(self, price: PriceSpec, report: SyncReport) -> dict[str, Any] | None:
        if price.tier is None:
            return {"amount_type": "fixed", "price_amount": price.cents, "price_currency": CURRENCY}
        meter_id = report.meters.get(price.tier)
        if meter_id is None:  # dry run: the meter would be created first
            return None
        return {
            "amount_type": "metered_unit",
            "meter_id": meter_id,
            "unit_amount": format(price.per_minute, "f"),
            "price_currency": CURRENCY,
        }

    def _match(self, price: PriceSpec, live: list[Any], report: SyncReport) -> Any | None:
        for p in live:
            if getattr(p, "price_currency", None) != CURRENCY or "Legacy" in type(p).__name__:
                continue
            if price.tier is None:
                if p.amount_type == "fixed" and p.price_amount == price.cents:
                    return p
            elif (
                p.amount_type == "metered_unit"
                and p.meter_id == report.meters.get(price.tier)
                and Decimal(p.unit_amount) == price.per_minute
                and p.cap_amount is None
            ):
                return p
        return None

    def _sync_product(
        self, spec: ProductSpec, product: Product | None, report: SyncReport
    ) -> str | None:
        price_list = ", ".join(p.describe() for p in spec.prices)
        if product is None:
            detail = f"{spec.name!r}, {spec.visibility}, monthly; prices: {price_list}"
            self._change(report, "create", "product", spec.plan, None, detail)
            if report.dry_run:
                return None
            bodies = [self._price_body(p, report) for p in spec.prices]
            created = self.gateway.create_product(
                name=spec.name,
                visibility=spec.visibility,
                recurring_interval="month",
                prices=[b for b in bodies if b is not None],
                metadata=spec.metadata,
            )
            return created.id
        if product.recurring_interval != "month":
            report.warnings.append(
                f"product {product.id} ({spec.plan}) renews every {product.recurring_interval}, "
                "not monthly; Polar cannot change that: archive it and sync again"
            )
        updates: dict[str, Any] = {}
        notes: list[str] = []
        if product.name != spec.name:
            updates["name"] = spec.name
            notes.append(f"name {product.name!r} → {spec.name!r}")
        if product.visibility != spec.visibility:
            updates["visibility"] = spec.visibility
            notes.append(f"visibility {product.visibility} → {spec.visibility}")
        if product.is_archived:
            updates["is_archived"] = False
            notes.append("unarchived")
        live = [p for p in product.prices if not p.is_archived]
        kept: list[Any] = []
        added: list[PriceSpec] = []
        for price in spec.prices:
            match = self._match(price, [p for p in live if p not in kept], report)
            if match is None:
                added.append(price)
            else:
                kept.append(match)
        dropped = [p for p in live if p not in kept]
        if added or dropped:
            # Polar keeps the prices listed by id and archives the other live ones, so
            # subscriptions on an old price keep it until they renew.
            bodies = [self._price_body(p, report) for p in added]
            updates["prices"] = [{"id": p.id} for p in kept] + [b for b in bodies if b]
            if added:
                notes.append("add prices " + ", ".join(p.describe() for p in added))
            if dropped:
                notes.append("archive prices " + ", ".join(_describe_live(p) for p in dropped))
        if updates:
            self._change(report, "update", "product", spec.plan, product.id, "; ".join(notes))
            if not report.dry_run:
                self.gateway.update_product(product.id, **updates)
        return product.id


def _describe_live(price: Any) -> str:
    if getattr(price, "amount_type", None) == "metered_unit":
        return f"{price.meter.name} {_cents(Decimal(price.unit_amount))}¢/min ({price.id})"
    if getattr(price, "amount_type", None) == "fixed":
        return f"fixed ${Decimal(price.price_amount) / 100:.2f} ({price.id})"
    return f"{getattr(price, 'amount_type', 'legacy')} ({price.id})"


def _cents(amount: Decimal | None) -> str:
    return format((amount or Decimal(0)).normalize(), "f")
