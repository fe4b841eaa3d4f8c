from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base


class WebhookDelivery(Base):
    """Every Polar webhook delivery, keyed by its `webhook-id` (stable across retries), so
    each is processed at most once."""

    __tablename__ = "polar_webhook_deliveries"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
