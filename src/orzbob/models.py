"""Imports every table so the metadata (and Alembic) sees the whole schema."""

from orzbob.accounts.models import ApiToken, Org
from orzbob.alerts.models import BudgetAlert
from orzbob.audit.models import AuditEntry
from orzbob.credits.models import CreditGrant
from orzbob.instances.models import Instance, InstanceEvent
from orzbob.kit.db import Base
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.polar.models import ReconcileRun, ScheduledPlanChange, WebhookDelivery
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup
from orzbob.testclock.models import TestClockState

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "BudgetAlert",
    "CreditGrant",
    "DailyUsage",
    "Instance",
    "InstanceEvent",
    "Org",
    "QuotaPeriod",
    "QuotaTierRollup",
    "ReconcileRun",
    "ScheduledPlanChange",
    "TestClockState",
    "UsageRecord",
    "UsageSegment",
    "WebhookDelivery",
]
