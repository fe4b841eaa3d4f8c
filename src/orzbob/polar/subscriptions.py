"""What a Polar subscription means for an org: its plan, customer, subscription and period.

Each subscription webhook carries the whole subscription, so the org is set from that
snapshot whatever the event type: a live subscription grants the plan its product names
(`metadata.orzbob_plan`, written by `orz polar sync`); a canceled or ended one returns the
org to the catalog's default plan at the end of the period (docs/spec.md §7), through a scheduled
change that a periodic job applies. Polar delivers webhooks FIFO per endpoint, so snapshots
arrive in the order they happened.

**The current subscription** (docs/polar.md): an org has at most one, the most recently
started subscription that grants a plan. A granting event for another subscription is adopted
only if that subscription started at or after the current one (the org's
`polar_subscription_started_at`, kept even after the subscription ends); an event for an
older one (a replaced subscription canceled at its period end, or a replay) is ignored and
never changes the plan or the period. An ending event counts only for the current one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.accounts.repository import account_repository
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.polar.models import PlanChangeReason, ScheduledPlanChange
from orzbob.polar.repository import plan_changes
from orzbob.polar.sync import PLAN_KEY

log = logging.getLogger(__name__)

# Statuses that keep access (past_due is a recoverable payment failure) and that end it.
GRANTING = frozenset({"active", "trialing", "past_due"})
ENDED = frozenset({"canceled", "unpaid", "incomplete_expired"})


class _Lenient(BaseModel):
    # Only the fields we use, as plain strings: a new Polar enum value or field is not an
    # error (SDK models are strict and would refuse the whole delivery).
    model_config = ConfigDict(extra="ignore")


class WebhookCustomer(_Lenient):
    id: str | None = None
    external_id: str | None = None


class WebhookProduct(_Lenient):
    id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SubscriptionPayload(_Lenient):
    id: str = Field(min_length=1, max_length=64)
    status: str
    customer_id: str | None = None
    customer: WebhookCustomer | None = None
    product_id: str | None = None
    product: WebhookProduct | None = None
    current_period_start: AwareDatetime | None = None
    current_period_end: AwareDatetime | None = None
    cancel_at_period_end: bool = False
    started_at: AwareDatetime | None = None
    created_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None

    @property
    def polar_customer_id(self) -> str | None:
        return self.customer_id or (self.customer.id if self.customer else None)

    @property
    def began(self) -> datetime | None:
        return self.started_at or self.created_at or self.current_period_start

    @property
    def is_ended(self) -> bool:
        return self.status in ENDED or self.ended_at is not None


@dataclass(frozen=True)
class Outcome:
    status: str  # processed | ignored | failed
    detail: str | None = None


class SubscriptionService:
    def find_org(self, session: Session, sub: SubscriptionPayload) -> Org | None:
        """The org named by the customer's external id (our org id), else the one already
        mapped to the Polar customer id. The row is locked for the rest of the transaction."""
        external = sub.customer.external_id if sub.customer else None
        if external:
            try:
                org = account_repository.get_org(session, uuid.UUID(external), lock=True)
            except ValueError:
                org = None
            if org is not None:
                return org
        customer_id = sub.polar_customer_id
        if not customer_id:
            return None
        return account_repository.by_polar_customer(session, customer_id, lock=True)

    def apply_webhook(
        self, session: Session, sub: SubscriptionPayload, *, catalog: Catalog, now: datetime
    ) -> Outcome:
        org = self.find_org(session, sub)
        if org is None:
            external = sub.customer.external_id if sub.customer else None
            return Outcome(
                "failed",
                f"no organization for Polar customer {sub.polar_customer_id} "
                f"(external_id {external!r})",
            )
        if sub.is_ended:
            return self._ended(session, org, sub, catalog=catalog, now=now)
        if sub.status not in GRANTING:
            # incomplete (first payment pending), paused, or a status Polar added later.
            if sub.polar_customer_id and not org.polar_customer_id:
                org.polar_customer_id = sub.polar_customer_id
            return Outcome("ignored", f"status {sub.status!r} grants no plan")
        return self._granting(session, org, sub, catalog=catalog, now=now)

    def _granting(
        self,
        session: Session,
        org: Org,
        sub: SubscriptionPayload,
        *,
        catalog: Catalog,
        now: datetime,
    ) -> Outcome:
        product_id = sub.product.id if sub.product else sub.product_id
        plan_id = sub.product.metadata.get(PLAN_KEY) if sub.product else None
        # Never guess a plan: a product without our metadata is a sync or setup problem.
        if not isinstance(plan_id, str) or not plan_id:
            return Outcome(
                "failed", f"product {product_id} has no {PLAN_KEY} metadata (run `orz polar sync`)"
            )
        if not catalog.has_plan(plan_id):
            return Outcome(
                "failed",
                f"product {product_id} names plan {plan_id!r}, which is not in the catalog",
            )
        if not self.is_current(org, sub):
            return Outcome(
                "ignored",
                f"subscription {sub.id} started before the organization's current one "
                f"({org.polar_subscription_id or 'ended'}, started "
                f"{org.polar_subscription_started_at}); its events change nothing",
            )
        if org.polar_subscription_id not in (None, sub.id):
            log.info(
                "org %s moves from subscription %s to %s", org.id, org.polar_subscription_id, sub.id
            )
        if sub.polar_customer_id:
            org.polar_customer_id = sub.polar_customer_id
        org.polar_subscription_id = sub.id
        if sub.began is not None:
            org.polar_subscription_started_at = sub.began
        self._set_period(org, sub)
        before = org.plan_id
        if before != plan_id:
            account_service.set_plan(session, org, plan_id, catalog=catalog, at=now)
            log.info("org %s plan %s → %s (Polar subscription %s)", org.id, before, plan_id, sub.id)
        if sub.cancel_at_period_end:
            at = sub.ends_at or sub.current_period_end or now
            self.schedule(
                session,
                org,
                at=at,
                subscription_id=sub.id,
                reason=PlanChangeReason.CANCELED,
                catalog=catalog,
                now=now,
            )
        else:
            self.unschedule(session, org.id, now=now)
        session.flush()
        return Outcome("processed", f"plan {plan_id}")

    def _ended(
        self,
        session: Session,
        org: Org,
        sub: SubscriptionPayload,
        *,
        catalog: Catalog,
        now: datetime,
    ) -> Outcome:
        if org.polar_subscription_id != sub.id:
            # An older subscription ending (replaced, or already applied): not the org's plan.
            return Outcome(
                "ignored", f"subscription {sub.id} is not the organization's current one"
            )
        self._set_period(org, sub)
        at = sub.current_period_end or sub.ended_at or now
        self.schedule(
            session,
            org,
            at=at,
            subscription_id=sub.id,
            reason=PlanChangeReason.ENDED,
            catalog=catalog,
            now=now,
        )
        session.flush()
        return Outcome("processed", f"{sub.status}: back to {catalog.default_plan} at {at}")

    @staticmethod
    def is_current(org: Org, sub: SubscriptionPayload) -> bool:
        """Whether a granting event for `sub` may set the org's plan and period: it is the
        current subscription, or one that started at or after it (the newest wins)."""
        if org.polar_subscription_id == sub.id:
            return True
        known, began = org.polar_subscription_started_at, sub.began
        if known is None or began is None:
            # Nothing to compare (an org that never had one, or data from before the start
            # was kept): a new subscription only replaces a missing one.
            return org.polar_subscription_id is None or known is None
        return began >= known

    @staticmethod
    def _set_period(org: Org, sub: SubscriptionPayload) -> None:
        if sub.current_period_start and sub.current_period_end:
            org.subscription_period_start = sub.current_period_start
            org.subscription_period_end = sub.current_period_end

    # -- scheduled changes --------------------------------------------------------------
    def schedule(
        self,
        session: Session,
        org: Org,
        *,
        at: datetime,
        subscription_id: str,
        reason: PlanChangeReason,
        catalog: Catalog,
        now: datetime,
    ) -> ScheduledPlanChange:
        """Return the org to the default plan at `at` (at once if `at` has passed). The
        caller holds the org row lock, which serialises this with the periodic job."""
        change = plan_changes.pending(session, org.id)
        if change is None:
            change = ScheduledPlanChange(
                org_id=org.id,
                plan_id=catalog.default_plan,
                effective_at=at,
                subscription_id=subscription_id,
                reason=reason.value,
                created_at=now,
                applied_at=None,
                canceled_at=None,
            )
            session.add(change)
        else:
            change.effective_at, change.subscription_id = at, subscription_id
            change.reason = reason.value
        session.flush()
        if at <= now:
            self._apply(session, org, change, catalog=catalog, now=now)
        return change

    def unschedule(self, session: Session, org_id: uuid.UUID, *, now: datetime) -> bool:
        change = plan_changes.pending(session, org_id)
        if change is None:
            return False
        change.canceled_at = now
        log.info("org %s: scheduled return to %s canceled", org_id, change.plan_id)
        return True

    def pending_change(self, session: Session, org_id: uuid.UUID) -> ScheduledPlanChange | None:
        return plan_changes.pending(session, org_id)

    def _apply(
        self,
        session: Session,
        org: Org,
        change: ScheduledPlanChange,
        *,
        catalog: Catalog,
        now: datetime,
    ) -> None:
        plan_id = change.plan_id if catalog.has_plan(change.plan_id) else catalog.default_plan
        if org.plan_id != plan_id:
            # The change takes effect when it fell due, however late this job runs.
            at = min(change.effective_at, now)
            account_service.set_plan(session, org, plan_id, catalog=catalog, at=at)
        if org.polar_subscription_id == change.subscription_id:
            org.polar_subscription_id = None
        # The period columns stay: later periods continue on the subscription's anchor day
        # (quota.periods.period_for), so no period is cut short or counted twice.
        change.applied_at = now
        session.flush()
        log.info("org %s returned to %s (subscription %s)", org.id, plan_id, change.subscription_id)

    def due_org_ids(self, session: Session, *, now: datetime, limit: int = 500) -> list[uuid.UUID]:
        """Orgs with a scheduled change whose time has come (unlocked; see `apply_due_for`)."""
        return plan_changes.due_org_ids(session, now=now, limit=limit)

    def apply_due_for(
        self, session: Session, org_id: uuid.UUID, *, catalog: Catalog, now: datetime
    ) -> bool:
        """Apply one org's due change, if it is still due once its org row is locked."""
        # Org row first, then the change: the same lock order as the webhook handler.
        org = account_repository.get_org(session, org_id, lock=True)
        change = plan_changes.pending(session, org_id)
        if change is None or change.effective_at > now:
            return False  # applied, moved or canceled meanwhile (by another worker too)
        if org is None:
            change.canceled_at = now  # the org was deleted
            return False
        self._apply(session, org, change, catalog=catalog, now=now)
        return True

    def apply_due(
        self, session: Session, *, catalog: Catalog, now: datetime, limit: int = 500
    ) -> int:
        """Apply every scheduled change whose time has come, in the caller's transaction;
        returns how many. The periodic job applies one org per transaction instead."""
        return sum(
            self.apply_due_for(session, org_id, catalog=catalog, now=now)
            for org_id in sorted(self.due_org_ids(session, now=now, limit=limit))
        )

    def apply_due_change(
        self, session: Session, org_id: uuid.UUID, catalog: Catalog, now: datetime
    ) -> bool:
        """Apply the org's change if it fell due: the close paths' boundary (instances'
        `due_changes`). An unlocked read first, so a close with nothing due locks nothing."""
        if not self.due_cuts(session, [org_id], now):
            return False
        return self.apply_due_for(session, org_id, catalog=catalog, now=now)

    def due_cuts(
        self, session: Session, org_ids: Collection[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, datetime]:
        """Orgs whose plan change fell due but is not applied yet, and when it fell due:
        usage past that moment waits for the change (metering's `usage_cuts`)."""
        if not org_ids:
            return {}
        return plan_changes.due_at(session, org_ids, now)

    def next_due(self, session: Session) -> datetime | None:
        return plan_changes.next_due(session)


subscription_service = SubscriptionService()
