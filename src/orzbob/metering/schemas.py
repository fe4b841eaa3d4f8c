from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class UsageRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    instance_id: uuid.UUID
    tier: str
    plan_id: str
    interval_start: datetime
    interval_end: datetime
    period_start: datetime
    minutes: int
    included_minutes: int
    overage_minutes: int
    billable_minutes: int
    small_minutes: int
    state: str
    last_error: str | None
    sent_at: datetime | None


class UsageExport(BaseModel):
    organization: str
    from_: datetime
    to: datetime
    total_minutes: int
    total_billable_minutes: int
    records: list[UsageRecordOut]
