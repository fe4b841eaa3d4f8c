"""The billing object. The first ten fields are read by existing clients: their names and JSON
types are a contract. Money added since is a decimal string; `estimated_bill` stays a number
(made from the exact Decimal at the edge, so it prints as e.g. 25.83, never 25.8299…)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orzbob.alerts.schemas import LastAlertOut
from orzbob.credits.schemas import parse_dollars
from orzbob.quota.service import QuotaStatus, floor_hundredths


class TierOut(BaseModel):
    tier: str
    name: str
    hourly_rate: str = Field(description="Dollars per hour, decimal string.")
    small_hour_weight: int
    minutes: int
    hours: float = Field(description="Instance-hours run on this tier this period.")
    included_minutes: int
    overage_minutes: int
    billable_minutes: int
    small_minutes: int = Field(description="Allowance consumed, in small-minutes.")
    cost: str = Field(description="billable minutes × rate / 60, rounded half-up to the cent.")


class EstimateOut(BaseModel):
    base: str
    usage: str
    credits_applied: str
    total: str


class CreditsOut(BaseModel):
    granted_this_period: str
    carried_in: str
    applied: str
    balance: str = Field(description="Credit left after this period's bill; carried forward.")


class ForecastOut(BaseModel):
    method: str = "linear: usage so far x period length / time elapsed"
    projected_hours_used: float
    projected_bill: str
    allowance_runs_out_at: datetime | None = Field(
        description="When the allowance ran out or will at this rate; null if not this period."
    )


class ThrottleOut(BaseModel):
    cap: str
    detail: str
    lifts_at: datetime | None = Field(
        description="When the cap lifts by itself; it also lifts with an upgrade or a higher "
        "spend limit where that applies."
    )


class UpcomingOut(BaseModel):
    cap: str = Field(description="idle, continuous_cap, daily_cap, quota_exhausted, spend_limit")
    at: datetime = Field(description="When the cap will be reached at the current rate.")
    instance_id: uuid.UUID | None = Field(description="The instance, for per-instance caps.")
    instance_name: str | None
    detail: str


class BillingOut(BaseModel):
    organization: str
    plan: str
    hours_used: float
    hours_included: float
    percent_used: float
    in_overage: bool
    reset_date: datetime
    estimated_bill: float
    daily_usage: str
    throttle_status: str
    org_id: uuid.UUID
    plan_id: str
    period_start: datetime
    period_end: datetime
    tiers: list[TierOut]
    estimate: EstimateOut
    credits: CreditsOut
    spend_limit: str | None
    forecast: ForecastOut
    throttles: list[ThrottleOut] = Field(description="Caps in force now, most binding first.")
    upcoming: list[UpcomingOut] = Field(
        description="Caps that will be reached within the next hour at the current rate."
    )
    as_of: datetime = Field(description="The moment these figures are true as of (service clock).")
    last_alert: LastAlertOut | None = Field(None, description="This period's latest budget alert.")

    @classmethod
    def from_status(
        cls,
        s: QuotaStatus,
        *,
        throttles: list[ThrottleOut],
        upcoming: list[UpcomingOut],
        last_alert: LastAlertOut | None = None,
    ) -> BillingOut:
        fc = s.forecast
        return cls(
            organization=s.org_name,
            plan=s.plan.name,
            hours_used=float(s.hours_used),
            hours_included=float(s.hours_included),
            percent_used=float(s.percent_used),
            in_overage=s.in_overage,
            reset_date=s.period.end,
            estimated_bill=float(s.estimate),
            daily_usage=hours_minutes(s.today_minutes),
            throttle_status=throttles[0].cap if throttles else "none",
            org_id=s.org_id,
            plan_id=s.plan.id,
            period_start=s.period.start,
            period_end=s.period.end,
            tiers=[
                TierOut(
                    tier=t.tier,
                    name=t.name,
                    hourly_rate=str(t.hourly_rate),
                    small_hour_weight=t.small_hour_weight,
                    minutes=t.minutes,
                    hours=float(floor_hundredths(Decimal(t.minutes) / 60)),
                    included_minutes=t.included_minutes,
                    overage_minutes=t.overage_minutes,
                    billable_minutes=t.billable_minutes,
                    small_minutes=t.small_minutes,
                    cost=str(t.cost),
                )
                for t in s.tiers
            ],
            estimate=EstimateOut(
                base=str(s.base),
                usage=str(s.usage_cost),
                credits_applied=str(s.credits.applied),
                total=str(s.estimate),
            ),
            credits=CreditsOut(
                granted_this_period=str(s.credits.granted_this_period),
                carried_in=str(s.credits.carried_in),
                applied=str(s.credits.applied),
                balance=str(s.credits.balance),
            ),
            spend_limit=None if s.spend_limit is None else str(s.spend_limit),
            forecast=ForecastOut(
                projected_hours_used=float(floor_hundredths(fc.projected_small_minutes / 60)),
                projected_bill=str(fc.projected_bill),
                allowance_runs_out_at=fc.allowance_runs_out_at,
            ),
            throttles=throttles,
            upcoming=upcoming,
            as_of=s.now,
            last_alert=last_alert,
        )


def hours_minutes(minutes: int) -> str:
    """390 → "6h 30m" (the `daily_usage` format clients parse)."""
    return f"{minutes // 60}h {minutes % 60}m"


class SpendLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal | None = Field(
        description='Dollars as a decimal string ("50.00"), or null to remove the limit.'
    )

    @field_validator("amount", mode="before")
    @classmethod
    def _dollars(cls, v: Any) -> Decimal | None:
        return None if v is None else parse_dollars(v)
