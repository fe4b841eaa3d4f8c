"""Helpers for the Polar integration tests: signed deliveries, subscription payloads, and a
billing-enabled runtime pointed at a local Polar server."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from standardwebhooks import Webhook

from orzbob.accounts.models import Org
from orzbob.polar.client import PolarGateway
from orzbob.polar.sync import CatalogSync, SyncReport
from orzbob.runtime import Runtime
from tests.metering.polar_support import billing_settings

SECRET = "whsec_" + "w" * 40  # what tests.metering.polar_support.billing_settings sets
T = TypeVar("T")


def use_billing(runtime: Runtime, url: str, **extra: Any) -> Runtime:
    """Point the test runtime at a local Polar server with billing enabled."""
    runtime.settings = billing_settings(runtime.settings, url, **extra)
    runtime.polar_gateway = None
    runtime.webhook_verifier = None
    return runtime


def sync_catalog(runtime: Runtime) -> SyncReport:
    gateway = PolarGateway(runtime.settings)
    try:
        return CatalogSync(gateway).run(runtime.catalog)
    finally:
        gateway.close()


def signed_headers(
    body: bytes | str,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    at: datetime | None = None,
    standard: bool = False,
) -> dict[str, str]:
    """Headers Polar would send. Legacy endpoints key the HMAC with the secret's UTF-8 bytes;
    Standard Webhooks endpoints with the base64 decoding of the part after `whsec_`."""
    text = body.decode() if isinstance(body, bytes) else body
    webhook_id = webhook_id or str(uuid.uuid4())
    at = at or datetime.now(UTC)
    key = base64.b64decode(secret.removeprefix("whsec_")) if standard else secret.encode()
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(key).sign(webhook_id, at, text),
    }


def subscription(
    org_id: uuid.UUID | str | None,
    *,
    plan: str | None = "base-plus-usage",
    sub_id: str = "sub_1",
    customer_id: str = "cus_1",
    status: str = "active",
    start: datetime,
    days: int = 30,
    cancel_at_period_end: bool = False,
    ended_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A subscription object with the fields the receiver reads, plus a few it ignores."""
    end = start + timedelta(days=days)
    metadata = {"orzbob_plan": plan} if plan else {}
    return {
        "id": sub_id,
        "created_at": start.isoformat(),
        "modified_at": None,
        "amount": 2000,
        "currency": "usd",
        "recurring_interval": "month",
        "status": status,
        "current_period_start": start.isoformat(),
        "current_period_end": end.isoformat(),
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": None,
        "started_at": start.isoformat(),
        "ends_at": end.isoformat() if cancel_at_period_end else None,
        "ended_at": ended_at.isoformat() if ended_at else None,
        "customer_id": customer_id,
        "product_id": "prod_1",
        "customer": {
            "id": customer_id,
            "external_id": str(org_id) if org_id else None,
            "email": "ops@acme.test",
            "type": "individual",
        },
        "product": {"id": "prod_1", "name": "Base + Usage", "metadata": metadata},
        "prices": [],
        "meters": [],
        **extra,
    }


def envelope(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "type": event_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "api_version": "2026-04",
            "data": data,
        }
    ).encode()


def org_row(runtime: Runtime, org_id: uuid.UUID) -> Org:
    with runtime.session() as s:
        org = s.get(Org, org_id)
        assert org is not None
        return org
