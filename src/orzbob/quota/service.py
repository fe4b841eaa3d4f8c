"""An org's quota and bill for the current period, read from rollups only (docs/spec.md §1, §4).

Nothing here scans usage records: the period row, the tier rollups and today's daily row are
maintained in the transaction that writes each record, so a status read is a handful of
primary-key lookups however much the org has run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, OrgFacts
from orzbob.accounts.service import Principal, account_service
from orzbob.audit.service import audit_service
from orzbob.catalog.models import Catalog, Plan
from orzbob.kit.errors import Unprocessable
from orzbob.kit.money import ZERO, format_usd, from_cents, minutes_cost, to_cents
from orzbob.quota.allocation import org_period
from orzbob.quota.forecast import Forecast, TierUsage, forecast
from orzbob.quota.periods import Period
from orzbob.quota.repository import quota_repository

HUNDREDTH = Decimal("0.01")
MAX_SPEND_LIMIT = Decimal("10000000.00")


@dataclass(frozen=True)
class Credits:
    granted_this_period: Decimal
    carried_in: Decimal
    applied: Decimal
    balance: Decimal


@dataclass(frozen=True)
class TierLine:
    tier: str
    name: str
    hourly_rate: Decimal
    small_hour_weight: int
    minutes: int
    included_minutes: int
    overage_minutes: int
    billable_minutes: int
    small_minutes: int
    # billable minutes × hourly rate / 60, rounded half-up to the cent once, on this line.
    cost: Decimal


@dataclass(frozen=True)
class QuotaStatus:
    org_id: uuid.UUID
    org_name: str
    plan: Plan
    period: Period
    now: datetime
    used_small_minutes: int  # allowance consumed
    weighted_minutes: int  # all usage in small-minute equivalents, overage included
    overage_minutes: int
    exhausted_at: datetime | None
    hours_used: Decimal
    hours_included: Decimal
    percent_used: Decimal
    in_overage: bool
    tiers: list[TierLine]
    base: Decimal
    usage_cost: Decimal
    credits: Credits
    estimate: Decimal
    spend_limit: Decimal | None
    today_minutes: int
    forecast: Forecast

    @property
    def remaining_small_minutes(self) -> int:
        return max(0, self.plan.included_small_minutes - self.used_small_minutes)


# Credits belong to the credits domain, above quota: it registers how much credit a period's
# gross bill absorbs (`credits.balance.credits_for_period`, through `install_hooks`).
CreditsProvider = Callable[
    [Session, OrgFacts, Catalog, Period, datetime, Decimal, "list[tuple[datetime, int]] | None"],
    Credits,
]
credit_providers: list[CreditsProvider] = []


def credits_for_period(
    session: Session,
    org: OrgFacts,
    catalog: Catalog,
    period: Period,
    *,
    now: datetime,
    gross: Decimal,
    grants: list[tuple[datetime, int]] | None = None,
) -> Credits:
    """`grants`: the org's grants up to `now`, when the caller has read them."""
    if not credit_providers:
        # Never a silent $0.00 of credit: an estimate without them would be too high.
        raise RuntimeError("No credits provider: call orzbob.hooks.install_hooks() first.")
    return credit_providers[0](session, org, catalog, period, now, gross, grants)


# Called after an org's spend limit changed, in that transaction (alerts re-arm thresholds).
SpendLimitHook = Callable[[Session, Org, Catalog, datetime], None]
spend_limit_hooks: list[SpendLimitHook] = []


def floor_hundredths(value: Decimal) -> Decimal:
    # Usage and percentages round down: 100 % is shown only once it is really reached.
    return value.quantize(HUNDREDTH, rounding=ROUND_DOWN)


def in_overage(plan: Plan, tiers: list[TierLine], *, remaining: int) -> bool:
    """Whether the org is past its allowance: some tier has overage minutes that what is
    left of the allowance could not hold any more.

    A usage-only plan is never "in overage" (nothing is included, so nothing is exceeded).
    Judged against the allowance left now, so after an upgrade mid-period the overage of
    the old plan (usage-only minutes, or the free tier's last minutes) does not count while
    the new allowance lasts; a gpu minute that no longer fits 10 small-minutes does."""
    if plan.included_small_minutes == 0:
        return False
    return any(t.overage_minutes > 0 and t.small_hour_weight > remaining for t in tiers)


@dataclass(frozen=True)
class PeriodFacts:
    """The rows a status read is made of. A caller that batches its reads (the billing read
    model) passes them to `status`; otherwise `status` reads them itself."""

    used_small_minutes: int  # 0 while the period has no row yet
    exhausted_at: datetime | None
    # tier -> (minutes, included, overage, billable, small-minutes) this period
    rollups: dict[str, tuple[int, int, int, int, int]]
    today_minutes: int
    # (granted at, cents) up to now, oldest first, when the caller read them (the billing
    # read model); None lets the credits provider read them.
    grants: list[tuple[datetime, int]] | None = None


class QuotaService:
    def facts(
        self, session: Session, org: OrgFacts, period: Period, *, now: datetime
    ) -> PeriodFacts:
        qp = quota_repository.period(session, org.id, period.start)
        return PeriodFacts(
            used_small_minutes=int(qp.used_small_minutes) if qp else 0,
            exhausted_at=qp.exhausted_at if qp else None,
            rollups=self.rollups(session, org.id, period.start),
            today_minutes=quota_repository.day_minutes(session, org.id, now.astimezone(UTC).date()),
        )

    def rollups(
        self, session: Session, org_id: uuid.UUID, period_start: datetime
    ) -> dict[str, tuple[int, int, int, int, int]]:
        """tier -> (minutes, included, overage, billable, small-minutes) this period."""
        return {
            r.tier: (
                int(r.minutes),
                int(r.included_minutes),
                int(r.overage_minutes),
                int(r.billable_minutes),
                int(r.small_minutes),
            )
            for r in quota_repository.tier_rollups(session, org_id, period_start)
        }

    def status(
        self,
        session: Session,
        org: OrgFacts,
        *,
        catalog: Catalog,
        now: datetime,
        facts: PeriodFacts | None = None,
    ) -> QuotaStatus:
        """The org's status for the period containing `now`, under its current plan; from
        `facts` when the caller read them for this period (see `PeriodFacts`)."""
        plan = catalog.plan(org.plan_id)
        period = org_period(org, now)
        if facts is None:
            facts = self.facts(session, org, period, now=now)
        rollups = facts.rollups
        tiers: list[TierLine] = []
        for tier in catalog.tiers:
            r = rollups.get(tier.id)
            if r is None and not plan.allows_tier(tier.id):
                continue
            minutes, included_m, overage_m, billable, small = r or (0, 0, 0, 0, 0)
            tiers.append(
                TierLine(
                    tier=tier.id,
                    name=tier.name,
                    hourly_rate=tier.hourly_rate,
                    small_hour_weight=tier.small_hour_weight,
                    minutes=minutes,
                    included_minutes=included_m,
                    overage_minutes=overage_m,
                    billable_minutes=billable,
                    small_minutes=small,
                    cost=minutes_cost(billable, tier.hourly_rate),
                )
            )
        used = facts.used_small_minutes
        exhausted_at = facts.exhausted_at
        weighted = sum(t.minutes * t.small_hour_weight for t in tiers)
        overage = sum(t.overage_minutes for t in tiers)
        included = plan.included_small_minutes
        usage_cost = sum((t.cost for t in tiers), ZERO)
        gross = plan.monthly_base + usage_cost
        credits = credits_for_period(
            session, org, catalog, period, now=now, gross=gross, grants=facts.grants
        )
        estimate = gross - credits.applied
        spend_limit = None if org.spend_limit_cents is None else from_cents(org.spend_limit_cents)
        fc = forecast(
            plan=plan,
            tiers=[
                TierUsage(t.tier, t.hourly_rate, t.small_hour_weight, t.minutes, t.billable_minutes)
                for t in tiers
            ],
            period=period,
            now=now,
            used_small_minutes=used,
            exhausted_at=exhausted_at,
            credits_available=credits.carried_in + credits.granted_this_period,
        )
        return QuotaStatus(
            org_id=org.id,
            org_name=org.name,
            plan=plan,
            period=period,
            now=now,
            used_small_minutes=used,
            weighted_minutes=weighted,
            overage_minutes=overage,
            exhausted_at=exhausted_at,
            hours_used=floor_hundredths(Decimal(weighted) / 60),
            hours_included=Decimal(plan.included_small_hours),
            percent_used=floor_hundredths(Decimal(weighted) * 100 / included) if included else ZERO,
            in_overage=in_overage(plan, tiers, remaining=max(0, included - used)),
            tiers=tiers,
            base=plan.monthly_base,
            usage_cost=usage_cost,
            credits=credits,
            estimate=estimate,
            spend_limit=spend_limit,
            today_minutes=facts.today_minutes,
            forecast=fc,
        )

    def status_of(
        self, session: Session, org_id: uuid.UUID, *, catalog: Catalog, now: datetime
    ) -> QuotaStatus:
        return self.status(
            session, account_service.get_org(session, org_id), catalog=catalog, now=now
        )

    # -- spend limit -----------------------------------------------------------------------
    def set_spend_limit(
        self,
        session: Session,
        org_id: uuid.UUID,
        amount: Decimal | None,
        *,
        actor: Principal,
        now: datetime,
        catalog: Catalog,
    ) -> Org:
        """Set (or with None remove) the org's spend limit, and log the change."""
        if amount is not None and amount <= 0:
            raise Unprocessable("amount: must be more than 0.00; send null to remove the limit.")
        if amount is not None and amount > MAX_SPEND_LIMIT:
            raise Unprocessable(f"amount: cannot be more than {format_usd(MAX_SPEND_LIMIT)}.")
        org = account_service.get_org(session, org_id, lock=True)
        before = org.spend_limit_cents
        org.spend_limit_cents = None if amount is None else to_cents(amount)
        session.flush()
        audit_service.record(
            session,
            action="spend_limit.set" if amount is not None else "spend_limit.clear",
            actor=actor,
            org_id=org.id,
            now=now,
            details={
                "from": None if before is None else str(from_cents(before)),
                "to": None if amount is None else str(amount),
            },
        )
        for hook in spend_limit_hooks:
            hook(session, org, catalog, now)
        return org

    def minutes_on(self, session: Session, day: date) -> int:
        """Instance-minutes of every org on one UTC day, from the daily rollups."""
        return quota_repository.minutes_on(session, day)


quota_service = QuotaService()
