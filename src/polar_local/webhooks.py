"""Signed webhook delivery, the way Polar delivers to a legacy endpoint.

Each event gets one `webhook-id` that stays the same on every retry; each attempt is signed
afresh with its own `webhook-timestamp`. Delivery runs on one background thread, FIFO per
endpoint URL: a later event for an endpoint waits until the earlier one is delivered or has
exhausted its attempts. Every event and attempt is recorded in the store.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from .common import JSON, Clock, iso, utc_now
from .store import Store

API_VERSION = "2026-04"
# Types whose `data` is a Subscription and that SDK 1.0.2 knows; `migrated` needs extra
# top-level fields and paused/resumed break SDK 0.32, so they are left out.
SUBSCRIPTION_EVENT_TYPES = frozenset(
    {
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.canceled",
        "subscription.uncanceled",
        "subscription.revoked",
        "subscription.past_due",
        "subscription.cycled",
    }
)


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` keyed with the UTF-8 bytes of the whole secret (legacy mode):
    bytes given to `standardwebhooks.Webhook` are used unchanged as the key."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(secret.encode()).sign(webhook_id, moment, body)


@dataclass
class _Delivery:
    webhook_id: str
    url: str
    secret: str
    body: str
    attempts: int = 0
    due: float = field(default_factory=time.monotonic)


class WebhookSender:
    def __init__(
        self,
        store: Store,
        *,
        url: str | None = None,
        secret: str | None = None,
        max_attempts: int = 10,
        retry_base_seconds: float = 2.0,
        retry_max_seconds: float = 20 * 60.0,
        timeout_seconds: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        if url and not secret:
            raise ValueError("a webhook URL needs a webhook secret")
        self._store = store
        self._clock = clock
        self.url, self.secret = url, secret
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.timeout_seconds = timeout_seconds
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_Delivery]] = {}
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def configure(self, **changes: Any) -> None:
        with self._cond:
            url = changes.get("url", self.url)
            secret = changes.get("secret", self.secret)
            if url and not secret:
                raise ValueError("a webhook URL needs a webhook secret")
            self.url, self.secret = url, secret
            for name in ("max_attempts", "retry_base_seconds", "retry_max_seconds"):
                if changes.get(name) is not None:
                    setattr(self, name, changes[name])
            self._cond.notify_all()

    def settings(self) -> JSON:
        with self._cond:
            return {
                "url": self.url,
                "secret_set": bool(self.secret),
                "max_attempts": self.max_attempts,
                "retry_base_seconds": self.retry_base_seconds,
                "retry_max_seconds": self.retry_max_seconds,
                "pending": self._pending_locked(),
            }

    def pending(self) -> int:
        with self._cond:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        return sum(len(q) for q in self._queues.values()) + self._in_flight

    def emit(self, event_type: str, data: JSON, *, subscription_id: str | None = None) -> str:
        """Record an event and queue it for the configured endpoint; returns its webhook-id."""
        webhook_id = str(uuid.uuid4())
        envelope = {
            "type": event_type,
            "timestamp": iso(self._clock()),
            "api_version": API_VERSION,
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":"))
        with self._cond:
            url, secret = self.url, self.secret
        state = "pending" if url and secret else "no_endpoint"
        self._store.record_webhook(
            {
                "webhook_id": webhook_id,
                "type": event_type,
                "url": url,
                "subscription_id": subscription_id,
                "payload": body,
                "state": state,
                "attempts": 0,
                "created_at": time.time(),
            }
        )
        if url and secret:
            with self._cond:
                self._queues.setdefault(url, deque()).append(
                    _Delivery(webhook_id, url, secret, body)
                )
                self._ensure_thread()
                self._cond.notify_all()
        return webhook_id

    def clear(self) -> None:
        with self._cond:
            self._queues.clear()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="polar-local-webhooks", daemon=True
            )
            self._thread.start()

    def _next_due(self) -> _Delivery | None:
        heads = [q[0] for q in self._queues.values() if q]
        return min(heads, key=lambda d: d.due) if heads else None

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_seconds, follow_redirects=False) as client:
            while True:
                with self._cond:
                    delivery = self._wait_for_due()
                    if delivery is None:
                        return
                    self._in_flight += 1
                try:
                    ok = self._attempt(client, delivery)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._after_attempt(delivery, ok)

    def _wait_for_due(self) -> _Delivery | None:
        while not self._stopping:
            delivery = self._next_due()
            if delivery is None:
                self._cond.wait()
                continue
            delay = delivery.due - time.monotonic()
            if delay <= 0:
                return delivery
            self._cond.wait(delay)
        return None

    def _after_attempt(self, delivery: _Delivery, ok: bool) -> None:
        queue = self._queues.get(delivery.url)
        if ok or delivery.attempts >= self.max_attempts:
            if queue and queue[0] is delivery:
                queue.popleft()
            return
        backoff = self.retry_base_seconds * 2 ** (delivery.attempts - 1)
        delivery.due = time.monotonic() + min(backoff, self.retry_max_seconds)

    def _attempt(self, client: httpx.Client, delivery: _Delivery) -> bool:
        delivery.attempts += 1
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "polar.sh webhooks",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(
                delivery.secret, delivery.webhook_id, timestamp, delivery.body
            ),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(delivery.url, content=delivery.body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
        ok = status is not None and 200 <= status < 300
        if ok:
            state = "delivered"
        elif delivery.attempts >= self.max_attempts:
            state = "failed"
        else:
            state = "retrying"
        self._store.record_attempt(
            {
                "webhook_id": delivery.webhook_id,
                "attempt": delivery.attempts,
                "at": time.time(),
                "webhook_timestamp": timestamp,
                "status_code": status,
                "error": error,
                "success": ok,
            },
            state,
        )
        return ok
