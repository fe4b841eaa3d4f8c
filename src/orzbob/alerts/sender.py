"""Delivers raised alerts over SMTP with aiosmtplib (docs/spec.md §5).

Claim in a short transaction (`FOR UPDATE SKIP LOCKED` plus a lease, so two senders never
take the same alert), commit, talk SMTP with no transaction open, then record each outcome in
its own short transaction right after its reply. The lease (`ORZBOB_ALERT_LEASE_SECONDS`) is
renewed every third of it while the batch is in flight, so a slow server never lets another
sender take over a message that is still being sent; a failed write of the outcome (a dropped
connection) is retried at once, well within the lease. Once recorded as sent, an alert is
never sent again.

The one duplicate left is the one SMTP cannot close: a sender killed after the server
accepted a message (end of DATA) and before its outcome is committed, a window of a reply and
one UPDATE. Its claim lapses (a worker restarted under the same `ORZBOB_WORKER_ID` takes it
back at once) and the message goes again, Message-ID and all, so mail clients that
deduplicate by Message-ID show it once. Each send is logged as `alert <id>: sending
<Message-ID>` before and `alert <id>: <Message-ID> recorded as sent` after, so such a resend
can be told from any other (the crash proof does).

A 5xx reply to a message is permanent (recorded, no retry); 4xx replies and connection errors
are retried with exponential backoff and jitter, for as long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orzbob.accounts.repository import account_repository
from orzbob.alerts.content import build_message
from orzbob.alerts.models import AlertState, BudgetAlert
from orzbob.alerts.repository import alert_repository
from orzbob.config import Settings
from orzbob.kit import metrics
from orzbob.kit.clock import Clock
from orzbob.kit.db import on_commit, session_scope
from orzbob.kit.leases import renewing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    id: uuid.UUID
    generation: int
    kind: str
    attempts: int
    recipients: list[str]
    message: EmailMessage


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    undeliverable: int = 0
    retrying: int = 0
    stopped: str | None = None


class _Blocked(Exception):
    """The server cannot take any message now (down, refusing us, bad login): retry later."""


def manage_url(settings: Settings, facts: dict[str, Any]) -> str:
    if settings.polar_customer_portal_url and facts.get("has_polar_customer"):
        return settings.polar_customer_portal_url
    return settings.public_url.rstrip("/") + "/"


# Replies about us, not about a message: login or TLS required, login refused. They would
# refuse every alert alike, so they are retried (and logged) until the setting is fixed.
_CONFIG_CODES = frozenset({530, 534, 535, 538})


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()[:2000]


@dataclass
class AlertSender:
    sessions: sessionmaker[Session]
    settings: Settings
    clock: Clock
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=30)
    base_delay: float = 30.0
    max_delay: float = 1800.0
    # Tries to record an outcome when the database connection fails (about 5 s in all, well
    # within any lease renewed in flight): a message the server accepted must not go twice.
    record_attempts: int = 8
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep

    def run(self, *, max_batches: int = 20) -> SendReport:
        """Deliver what is due; stops early when the server is unreachable."""
        report = SendReport()
        try:
            for _ in range(max_batches):
                batch = self._claim(report)
                if not batch:
                    break
                with self._renewing([item.id for item in batch]):
                    asyncio.run(self._deliver(batch, report))
        except _Blocked as exc:
            report.stopped = str(exc)
        finally:
            self.update_gauges()
        return report

    def reclaim_own(self) -> int:
        """Release the claims a previous run under this worker id left behind (it was killed),
        so they go now instead of when their lease lapses. Call once at start, and only with a
        worker id no other live process uses."""
        with session_scope(self.sessions) as s:
            n = alert_repository.release_claims(s, worker=self.worker_id)
        if n:
            log.info("took back %d alert(s) claimed by %s before a restart", n, self.worker_id)
        return n

    # -- claiming ------------------------------------------------------------------------
    def _claim(self, report: SendReport) -> list[Outgoing]:
        now, real_now = self.clock.now(), datetime.now(UTC)
        out: list[Outgoing] = []
        with session_scope(self.sessions) as s:
            for alert in alert_repository.claimable(
                s, now=now, real_now=real_now, limit=self.batch_size
            ):
                org = account_repository.get_org(s, alert.org_id)
                contacts = list(dict.fromkeys(org.billing_emails)) if org else []
                if not contacts:
                    alert.state = AlertState.UNDELIVERABLE.value
                    alert.last_error = "The organization has no billing contact."
                    alert.recipients = []
                    report.undeliverable += 1
                    on_commit(s, metrics.alerts_failed_total.labels(kind=alert.kind).inc)
                    continue
                alert.recipients = contacts
                alert.attempts += 1
                alert.claimed_by = self.worker_id
                alert.claim_expires_at = real_now + self.lease
                out.append(self._outgoing(alert))
        return out

    def _outgoing(self, alert: BudgetAlert) -> Outgoing:
        msg = build_message(
            alert.facts,
            subject=alert.subject,
            message_id=alert.message_id,
            sender=self.settings.email_from_address,
            recipients=list(alert.recipients),
            created_at=alert.created_at,
            manage_url=manage_url(self.settings, alert.facts),
            alert_id=str(alert.id),
        )
        if alert.facts.get("resend_of"):
            msg["References"] = alert.facts["resend_of"]
        return Outgoing(
            alert.id, alert.generation, alert.kind, alert.attempts, list(alert.recipients), msg
        )

    def _renewing(self, ids: list[uuid.UUID]) -> AbstractContextManager[None]:
        """Keep the batch's leases alive while it is in flight (a slow or stalling server)."""

        def renew() -> None:
            with session_scope(self.sessions) as s:
                alert_repository.renew_claims(
                    s, ids, worker=self.worker_id, until=datetime.now(UTC) + self.lease
                )

        return renewing(renew, self.lease, name="alert sender")

    # -- talking SMTP --------------------------------------------------------------------
    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=password if s.smtp_username else None,
            start_tls=s.smtp_starttls,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
            timeout=s.smtp_timeout_seconds,
        )

    async def _deliver(self, batch: list[Outgoing], report: SendReport) -> None:
        smtp = self._client()
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Never the password: the server's reply and the user name are enough to act on.
            self._retry_all(batch, f"SMTP login as {self.settings.smtp_username!r} refused: "
                            f"{_reply(exc.code, exc.message)}", "auth", report)  # fmt: skip
            raise _Blocked(f"SMTP login refused ({exc.code})") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            where = f"{self.settings.smtp_host}:{self.settings.smtp_port}"
            self._retry_all(batch, f"cannot reach SMTP {where}: {exc}", "connection", report)
            raise _Blocked(f"SMTP {where} unreachable: {exc}") from exc
        try:
            for i, item in enumerate(batch):
                if not self._still_mine(item):
                    continue
                log.info("alert %s: sending %s", item.id, item.message["Message-ID"])
                try:
                    errors, message = await smtp.send_message(
                        item.message, sender=self.settings.email_from_mailbox,
                        recipients=item.recipients,
                    )  # fmt: skip
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    replies = "; ".join(f"{r.recipient}: {_reply(r.code, r.message)}"
                                        for r in exc.recipients)  # fmt: skip
                    if all(500 <= r.code < 600 for r in exc.recipients):
                        self._final(item, AlertState.UNDELIVERABLE, replies, report)
                    else:
                        self._retry(item, replies, "4xx", report)
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code in _CONFIG_CODES or (
                        isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code >= 500
                    ):
                        error = f"the SMTP server refuses us: {_reply(exc.code, exc.message)}"
                        log.error("%s (check the SMTP_* and EMAIL_FROM_ADDRESS settings)", error)
                        self._retry_all(batch[i:], error, "config", report)
                        raise _Blocked(error) from exc
                    if 500 <= exc.code < 600:
                        self._final(item, AlertState.FAILED, _reply(exc.code, exc.message), report)
                    else:
                        self._retry(item, _reply(exc.code, exc.message), "4xx", report)
                        if exc.code == 421:  # the server is closing the connection
                            self._retry_all(batch[i + 1 :], "server closed: 421", "4xx", report)
                            return
                except (aiosmtplib.SMTPException, OSError) as exc:
                    self._retry_all(batch[i:], f"SMTP connection lost: {exc}", "connection",
                                    report)  # fmt: skip
                    raise _Blocked(f"SMTP connection lost: {exc}") from exc
                else:
                    refused = "; ".join(f"{a}: {r}" for a, r in errors.items())
                    self._sent(item, _reply(250, message), refused or None, report)
        finally:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    # -- recording outcomes (one short transaction each) ----------------------------------
    def _finish(self, item: Outgoing, **values: Any) -> bool:
        delay = 0.05
        for attempt in range(1, self.record_attempts + 1):
            try:
                with session_scope(self.sessions) as s:
                    done = alert_repository.finish_claim(
                        s, item.id, worker=self.worker_id, generation=item.generation,
                        values=values,
                    )  # fmt: skip
                break
            except (OperationalError, InterfaceError) as exc:
                # Most often a dropped connection the pool replaces on the next try. Giving up
                # leaves the claim to lapse, and a message the server accepted would go twice.
                if attempt == self.record_attempts:
                    raise
                log.warning("alert %s: recording its outcome failed (%s); trying again",
                            item.id, exc.orig or exc)  # fmt: skip
                self.sleep(delay)
                delay = min(2.0, delay * 2)
        if not done:
            log.warning(
                "alert %s changed while it was being sent (re-armed or taken over)", item.id
            )
        return done

    def _still_mine(self, item: Outgoing) -> bool:
        """Renew this alert's lease just before sending it, so a slow batch never lets
        another sender take it over mid-way (and skip it if that already happened)."""
        with session_scope(self.sessions) as s:
            mine = alert_repository.renew_claim(
                s,
                item.id,
                worker=self.worker_id,
                generation=item.generation,
                until=datetime.now(UTC) + self.lease,
            )
        if not mine:
            log.warning("alert %s was taken over or re-armed before it was sent", item.id)
        return mine

    def _sent(self, item: Outgoing, reply: str, refused: str | None, report: SendReport) -> None:
        if self._finish(
            item,
            state=AlertState.SENT.value,
            sent_at=self.clock.now(),
            smtp_reply=reply,
            last_error=f"some recipients refused: {refused}" if refused else None,
        ):
            log.info("alert %s: %s recorded as sent", item.id, item.message["Message-ID"])
            report.sent += 1
            metrics.alerts_sent_total.labels(kind=item.kind).inc()

    def _final(self, item: Outgoing, state: AlertState, error: str, report: SendReport) -> None:
        log.error("alert %s not deliverable (%s): %s", item.id, state.value, error)
        if self._finish(item, state=state.value, last_error=error):
            if state == AlertState.FAILED:
                report.failed += 1
            else:
                report.undeliverable += 1
            metrics.alerts_failed_total.labels(kind=item.kind).inc()

    def _retry(self, item: Outgoing, error: str, reason: str, report: SendReport) -> None:
        delay = self.delay(item.attempts)
        if self._finish(
            item,
            last_error=error[:2000],
            next_attempt_at=self.clock.now() + timedelta(seconds=delay),
        ):
            report.retrying += 1
            metrics.alerts_retries_total.labels(reason=reason).inc()

    def _retry_all(
        self, items: list[Outgoing], error: str, reason: str, report: SendReport
    ) -> None:
        log.warning("budget alerts wait for a retry: %s", error)
        for item in items:
            self._retry(item, error, reason, report)

    def delay(self, attempts: int) -> float:
        """Seconds before the next try: doubling from `base_delay`, capped, ±50 % jitter so
        senders that failed together do not come back together."""
        backoff = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return backoff * self.rng.uniform(0.5, 1.5)

    def update_gauges(self) -> None:
        with session_scope(self.sessions) as s:
            count, oldest = alert_repository.unsent(s)
        metrics.alerts_unsent.set(count)
        age = (self.clock.now() - oldest).total_seconds() if oldest else 0.0
        metrics.alerts_oldest_unsent_seconds.set(max(0.0, age))
