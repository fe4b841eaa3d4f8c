"""Credits: support gives money back, within role limits, every grant in the audit log.

A grant reduces the estimate of the billing period it is granted in; whatever that period's
bill cannot absorb is a balance carried into the following periods (see quota.service).

Reaching Polar is an outbox: each grant starts `polar_state=pending`, and a Polar task ships
it with `pending_polar_applications` → (Polar call, no lock held) → `mark_polar_applied` or
`mark_polar_failed`. The mechanism is described in docs/support-runbooks/.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, Role
from orzbob.accounts.repository import account_repository
from orzbob.accounts.service import Principal, account_service
from orzbob.audit.service import audit_service
from orzbob.credits.models import CreditGrant, PolarState
from orzbob.credits.repository import credit_repository
from orzbob.kit.errors import Conflict, Forbidden, NotFound
from orzbob.kit.money import format_usd, from_cents, to_cents
from orzbob.quota.allocation import org_period

# Per-grant ceilings by staff role (docs/spec.md §9); None is unlimited.
ROLE_LIMITS_CENTS: dict[Role, int | None] = {
    Role.SUPPORT_L1: 50_00,
    Role.SUPPORT_L2: 500_00,
    Role.ENGINEERING: None,
}
POLAR_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class PolarCreditApplication:
    """What the Polar task needs to put one grant on the customer's next invoice."""

    grant_id: uuid.UUID
    org_id: uuid.UUID
    polar_customer_id: str | None
    polar_subscription_id: str | None
    amount_cents: int
    reason: str
    period_start: datetime
    period_end: datetime
    attempts: int
    discount_id: str | None = None  # the discount it was put on, if a run got that far


def _limit_text(role: Role) -> str:
    cents = ROLE_LIMITS_CENTS.get(role)
    return "no limit" if cents is None else f"up to {format_usd(from_cents(cents))}"


def check_role_limit(role: Role, amount_cents: int) -> None:
    if role not in ROLE_LIMITS_CENTS:
        raise Forbidden("Only support staff can grant credits.")
    limit = ROLE_LIMITS_CENTS[role]
    if limit is None or amount_cents <= limit:
        return
    able = [
        f"{r.value} ({_limit_text(r)})"
        for r, cap in ROLE_LIMITS_CENTS.items()
        if cap is None or amount_cents <= cap
    ]
    raise Forbidden(
        f"A {role.value} can grant {_limit_text(role)} per credit; "
        f"{format_usd(from_cents(amount_cents))} needs {' or '.join(able)}."
    )


class CreditService:
    def grant(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        amount: Decimal,
        reason: str,
        actor: Principal,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> tuple[CreditGrant, bool]:
        """Grant a credit; returns (grant, created). A repeated idempotency key returns the
        first grant (created=False) and writes nothing."""
        # The org row lock serialises grants per org, so two retries of one key cannot both
        # insert; an unknown or deleted org is a 404 before anything is written.
        org = account_service.get_org(session, org_id, lock=True)
        cents = to_cents(amount)
        check_role_limit(actor.role, cents)
        if idempotency_key is not None:
            existing = credit_repository.by_idempotency_key(session, org.id, idempotency_key)
            if existing is not None:
                if existing.amount_cents != cents or existing.reason != reason:
                    raise Conflict(
                        "This Idempotency-Key was already used for a different credit "
                        f"({format_usd(from_cents(existing.amount_cents))}); use a new key."
                    )
                return existing, False
        period = org_period(org, now)
        grant = CreditGrant(
            org_id=org.id,
            amount_cents=cents,
            reason=reason,
            granted_by_token_id=actor.token_id,
            granted_by_role=actor.role.value,
            idempotency_key=idempotency_key,
            period_start=period.start,
            period_end=period.end,
            created_at=now,
            polar_state=PolarState.PENDING.value,
            polar_attempts=0,
            polar_error=None,
            polar_reference=None,
            polar_applied_at=None,
            polar_discount_id=None,
        )
        session.add(grant)
        session.flush()
        audit_service.record(
            session,
            action="credit.grant",
            actor=actor,
            org_id=org.id,
            now=now,
            reason=reason,
            details={
                "credit_id": str(grant.id),
                "amount": str(from_cents(cents)),
                "period_start": period.start.isoformat(),
            },
        )
        return grant, True

    def grants_until(
        self, session: Session, org_id: uuid.UUID, now: datetime
    ) -> list[tuple[datetime, int]]:
        """(granted at, cents) of the org's grants up to `now`, oldest first."""
        return credit_repository.grants_until(session, org_id, now)

    def list_grants(
        self, session: Session, org_id: uuid.UUID, *, limit: int = 500
    ) -> Sequence[CreditGrant]:
        account_service.get_org(session, org_id)
        return credit_repository.newest_of(session, org_id, limit=limit)

    # -- the Polar outbox boundary -------------------------------------------------------
    def pending_polar_applications(
        self, session: Session, limit: int = 100
    ) -> list[PolarCreditApplication]:
        """Claim up to `limit` grants waiting for Polar, oldest first. Rows another worker
        holds are skipped (PostgreSQL), so several workers never ship a grant twice. Commit
        (release the locks) before calling Polar; never call out while holding them."""
        grants = credit_repository.claim_pending_polar(session, limit=limit)
        orgs: dict[uuid.UUID, Org] = {}
        for org_id in sorted({g.org_id for g in grants}):
            org = account_repository.get_org(session, org_id, include_deleted=True)
            assert org is not None  # a grant's org row is never removed (foreign key)
            orgs[org_id] = org
        return [
            PolarCreditApplication(
                grant_id=g.id,
                org_id=g.org_id,
                polar_customer_id=org.polar_customer_id,
                polar_subscription_id=org.polar_subscription_id,
                amount_cents=g.amount_cents,
                reason=g.reason,
                period_start=g.period_start,
                period_end=g.period_end,
                attempts=g.polar_attempts,
                discount_id=g.polar_discount_id,
            )
            for g in grants
            for org in [orgs[g.org_id]]
        ]

    def mark_polar_applied(
        self, session: Session, grant_id: uuid.UUID, *, reference: str, now: datetime
    ) -> CreditGrant:
        """Polar accepted the credit (`reference`: e.g. the discount id it created)."""
        grant = self._locked(session, grant_id)
        if grant.polar_state == PolarState.APPLIED.value:
            return grant  # a retried acknowledgement changes nothing
        grant.polar_state = PolarState.APPLIED.value
        grant.polar_reference = reference
        grant.polar_applied_at = now
        grant.polar_error = None
        grant.polar_attempts += 1
        session.flush()
        return grant

    def note_polar_discount(
        self, session: Session, grant_ids: list[uuid.UUID], *, discount_id: str
    ) -> None:
        """Record the discount about to carry these grants, before it is attached, so a later
        run can tell whether an invoice already used them."""
        for grant_id in sorted(grant_ids):
            grant = self._locked(session, grant_id)
            if grant.polar_state == PolarState.PENDING.value:
                grant.polar_discount_id = discount_id
        session.flush()

    def mark_polar_failed(
        self, session: Session, grant_id: uuid.UUID, *, error: str, permanent: bool = False
    ) -> CreditGrant:
        """Record a failed attempt. Transient failures stay pending (retried) until
        POLAR_MAX_ATTEMPTS; a permanent one (Polar said 4xx) goes to `failed` for support."""
        grant = self._locked(session, grant_id)
        if grant.polar_state == PolarState.APPLIED.value:
            raise Conflict(f"Credit {grant_id} is already applied in Polar.")
        grant.polar_attempts += 1
        grant.polar_error = error[:2000]
        if permanent or grant.polar_attempts >= POLAR_MAX_ATTEMPTS:
            grant.polar_state = PolarState.FAILED.value
        session.flush()
        return grant

    def requeue_polar(
        self, session: Session, grant_id: uuid.UUID, *, actor: Principal, now: datetime
    ) -> CreditGrant:
        """Send a `failed` credit to Polar again once support fixed the cause (e.g. the org
        now has a subscription). Only the delivery state moves; the grant itself never does."""
        grant = self._locked(session, grant_id)
        if grant.polar_state != PolarState.FAILED.value:
            raise Conflict(
                f"Credit {grant_id} is {grant.polar_state} in Polar; only a failed one is retried."
            )
        error = grant.polar_error
        grant.polar_state = PolarState.PENDING.value
        grant.polar_attempts = 0
        session.flush()
        audit_service.record(
            session,
            action="credit.polar_retry",
            actor=actor,
            org_id=grant.org_id,
            now=now,
            details={"credit_id": str(grant.id), "last_error": error},
        )
        return grant

    def _locked(self, session: Session, grant_id: uuid.UUID) -> CreditGrant:
        grant = credit_repository.locked(session, grant_id)
        if grant is None:
            raise NotFound(f"Credit {grant_id} does not exist.")
        return grant


credit_service = CreditService()
