from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class LastAlertOut(BaseModel):
    kind: str = Field(description='"allowance" or "spend_limit"')
    threshold: int = Field(description="Percent of the allowance or of the spend limit.")
    state: str = Field(description="pending, sent, covered, undeliverable or failed")
    created_at: datetime
    sent_at: datetime | None
    subject: str


class AlertOut(BaseModel):
    id: uuid.UUID
    kind: str = Field(description='"allowance" or "spend_limit"')
    threshold: int = Field(description="Percent of the allowance or of the spend limit.")
    state: str = Field(description="pending, sent, covered, undeliverable, failed or rearmed")
    period_start: datetime
    period_end: datetime
    created_at: datetime = Field(description="When the threshold was crossed.")
    sent_at: datetime | None
    subject: str
    recipients: list[str]
    attempts: int
    next_attempt_at: datetime | None = Field(description="When a pending alert is tried next.")
    last_error: str | None = Field(description="Why the last attempt did not deliver it.")
    smtp_reply: str | None = Field(description="The mail server's reply when it accepted it.")
    covered_by: uuid.UUID | None = Field(description="The higher alert that was sent instead.")
    message_id: str
    rearmed_at: datetime | None


class AlertList(BaseModel):
    period_start: datetime | None
    alerts: list[AlertOut]
