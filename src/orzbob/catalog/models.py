"""Catalog data: plans and instance tiers, validated when loaded."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    name: str
    hourly_rate: Decimal = Field(ge=0)
    small_hour_weight: int = Field(ge=1)
    vcpu: int = Field(ge=1)
    memory_gib: int = Field(ge=1)
    gpus: int = Field(0, ge=0)

    @field_validator("hourly_rate", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError("prices must be decimal strings, not floats")
        return v

    @property
    def resources(self) -> str:
        gpu = f", {self.gpus} GPU" if self.gpus else ""
        return f"{self.vcpu} vCPU, {self.memory_gib} GiB{gpu}"


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    name: str
    monthly_base: Decimal = Field(ge=0)
    included_small_hours: int = Field(ge=0)
    tiers: tuple[str, ...] = Field(min_length=1)
    max_running_instances: int = Field(ge=1)
    idle_timeout_minutes: int = Field(ge=1)
    visibility: Literal["public", "private"]
    after_allowance: Literal["hard_stop", "overage"]
    continuous_cap_hours: int = Field(8, ge=1)
    daily_cap_instance_hours: int = Field(24, ge=1)

    @field_validator("monthly_base", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError("prices must be decimal strings, not floats")
        return v

    @property
    def included_small_minutes(self) -> int:
        return self.included_small_hours * 60

    @property
    def bills_overage(self) -> bool:
        return self.after_allowance == "overage"

    def allows_tier(self, tier_id: str) -> bool:
        return tier_id in self.tiers


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tiers: tuple[Tier, ...] = Field(min_length=1)
    plans: tuple[Plan, ...] = Field(min_length=1)
    default_plan: str

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        tier_ids = [t.id for t in self.tiers]
        plan_ids = [p.id for p in self.plans]
        for kind, ids in (("tier", tier_ids), ("plan", plan_ids)):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id: {', '.join(dupes)}")
        for plan in self.plans:
            unknown = [t for t in plan.tiers if t not in tier_ids]
            if unknown:
                raise ValueError(f"plan {plan.id} names unknown tier(s): {', '.join(unknown)}")
        if self.default_plan not in plan_ids:
            raise ValueError(f"default plan {self.default_plan} is not in the catalog")
        return self

    def tier(self, tier_id: str) -> Tier:
        for t in self.tiers:
            if t.id == tier_id:
                return t
        raise KeyError(tier_id)

    def plan(self, plan_id: str) -> Plan:
        for p in self.plans:
            if p.id == plan_id:
                return p
        raise KeyError(plan_id)

    def has_plan(self, plan_id: str) -> bool:
        return any(p.id == plan_id for p in self.plans)

    def has_tier(self, tier_id: str) -> bool:
        return any(t.id == tier_id for t in self.tiers)

    @property
    def tier_ids(self) -> list[str]:
        return [t.id for t in self.tiers]

    @property
    def plan_ids(self) -> list[str]:
        return [p.id for p in self.plans]
