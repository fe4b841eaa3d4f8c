"""Inbound Polar webhooks: verify the signature on the raw body, record the delivery id once,
process, mark handled — all in one transaction (STYLE: inbound webhooks).

Signature freshness is checked against real (wall-clock) time, not the service clock: the
sender stamps `webhook-timestamp` with real time, and the ±5 min window exists to refuse
replays in real time. The test clock stands still and is moved by days, so checking against
it would refuse every genuine delivery after the first advance. Business effects (plan
changes, scheduled returns to the default plan) use the service clock.

A correctly signed delivery that cannot be applied (unknown org, a product without a known
plan) is recorded as `failed` with the reason and answered 202: Polar delivers FIFO per
endpoint, so a 4xx would hold back every later event for hours and finally disable the
endpoint. A failed delivery is processed again if Polar redelivers it (same webhook-id), so
an operator can fix the cause (e.g. `orz polar sync`) and redeliver from Polar.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from orzbob.catalog.models import Catalog
from orzbob.kit.errors import BadRequest, OrzbobError
from orzbob.kit.jsontext import loads_strict
from orzbob.kit.metrics import polar_webhooks_total
from orzbob.polar.repository import webhook_deliveries
from orzbob.polar.subscriptions import Outcome, SubscriptionPayload, subscription_service

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SUBSCRIPTION_EVENTS = frozenset(
    {
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.uncanceled",
        "subscription.canceled",
        "subscription.revoked",
        "subscription.past_due",
        "subscription.cycled",
    }
)


class InvalidSignature(OrzbobError):
    status_code = 401
    error = "invalid_signature"


class WebhooksNotConfigured(OrzbobError):
    status_code = 503
    error = "webhooks_not_configured"


class WebhookVerifier:
    """Standard Webhooks verification with both Polar key modes, as SDK 1.x does: legacy
    endpoints sign with the UTF-8 bytes of the whole secret, Standard Webhooks endpoints with
    the base64 decoding of the part after `whsec_`."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        keys = [secret.encode()]
        if secret.startswith(SECRET_PREFIX):
            try:
                decoded = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            if decoded and decoded != keys[0]:
                keys.append(decoded)
        # Bytes are used unchanged as the HMAC key (a str would be base64-decoded).
        self._hooks = [Webhook(key) for key in keys]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The delivery's `webhook-id` if a signature matches, else InvalidSignature."""
        lowered = {k.lower(): v for k, v in headers.items()}
        reason = "No matching signature found"
        for hook in self._hooks:
            try:
                hook.verify(body, lowered, json_parse=False)
            except WebhookVerificationError as exc:
                reason = str(exc)
                continue
            except ValueError:  # the library's quirk on a malformed signature token
                reason = "Malformed webhook-signature header"
                continue
            return lowered["webhook-id"]
        raise InvalidSignature(f"Webhook signature verification failed: {reason}.")


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(min_length=1)
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class WebhookResult:
    status: str  # processed | ignored | failed | duplicate | rejected
    detail: str | None = None


class PayloadRejected(BadRequest):
    """A signed body that is no Polar event; recorded (status `rejected`) and answered 400."""


class WebhookService:
    def handle(
        self,
        session: Session,
        *,
        webhook_id: str,
        body: bytes,
        catalog: Catalog,
        now: datetime,
    ) -> WebhookResult:
        """Process a verified delivery once. The caller commits; an unexpected error rolls
        everything back (the delivery too), and Polar retries."""
        if not 1 <= len(webhook_id) <= 128:
            raise BadRequest("The webhook-id header must be 1 to 128 characters.")
        try:
            raw = loads_strict(body)
            envelope = Envelope.model_validate(raw)
        except ValueError as exc:  # ValidationError is a ValueError
            why = "not a Polar event envelope" if isinstance(exc, ValidationError) else str(exc)
            return self._reject(session, webhook_id, why, now=now)
        fresh = _claim(
            session,
            {
                "id": webhook_id,
                "event_type": envelope.type[:64],
                "received_at": now,
                "processed_at": None,
                "status": "processing",
                "error": None,
                "payload": raw,
            },
        )
        delivery = webhook_deliveries.locked(session, webhook_id)
        assert delivery is not None
        if not fresh and delivery.status != "failed":
            polar_webhooks_total.labels(status="duplicate").inc()
            return WebhookResult("duplicate", f"delivery {webhook_id} was already handled")
        outcome = self._dispatch(session, envelope, catalog=catalog, now=now)
        delivery.status = outcome.status
        delivery.processed_at = now
        delivery.error = outcome.detail if outcome.status == "failed" else None
        session.flush()
        polar_webhooks_total.labels(status=outcome.status).inc()
        if outcome.status == "failed":
            log.error("Polar webhook %s (%s) failed: %s", webhook_id, envelope.type, outcome.detail)
        else:
            log.info("Polar webhook %s (%s): %s", webhook_id, envelope.type, outcome.status)
        return WebhookResult(outcome.status, outcome.detail)

    def _reject(
        self, session: Session, webhook_id: str, why: str, *, now: datetime
    ) -> WebhookResult:
        """Record a signed body that cannot be read (the caller commits, then answers 400),
        so support sees it; the body itself may be unstorable, so only the reason is kept."""
        detail = f"The webhook body cannot be read: {why}."
        _claim(
            session,
            {
                "id": webhook_id,
                "event_type": "",
                "received_at": now,
                "processed_at": now,
                "status": "rejected",
                "error": detail,
                "payload": {},
            },
        )
        polar_webhooks_total.labels(status="rejected").inc()
        log.error("Polar webhook %s rejected: %s", webhook_id, why)
        return WebhookResult("rejected", detail)

    def _dispatch(
        self, session: Session, envelope: Envelope, *, catalog: Catalog, now: datetime
    ) -> Outcome:
        if envelope.type not in SUBSCRIPTION_EVENTS:
            # Includes customer.state_changed, whose model in polar-sdk 1.0.2 fails to parse.
            return Outcome("ignored", f"event type {envelope.type!r} is not used")
        try:
            sub = SubscriptionPayload.model_validate(envelope.data)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            return Outcome("failed", f"unreadable subscription payload ({fields})")
        return subscription_service.apply_webhook(session, sub, catalog=catalog, now=now)


def _claim(session: Session, row: dict[str, Any]) -> bool:
    """Insert the delivery unless its id is known; True if it was new."""
    return webhook_deliveries.insert_ignore(session, [row]) == 1


webhook_service = WebhookService()
