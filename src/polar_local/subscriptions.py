"""Subscription lifecycle: state changes and the webhooks Polar sends for them.

The webhook rules follow Polar's `_after_subscription_updated`: always `updated`; `active` when
it became active; `canceled` when a cancellation set or moved `ends_at`; `uncanceled` when a
pending cancellation was removed; `revoked` when access ended. `past_due` is announced on its
own because it is recoverable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal, get_args

from .common import JSON, add_interval, iso, parse_iso
from .context import ServerContext
from .errors import ApiError
from .fixtures import ACTIVE_STATUSES, new_subscription, subscription_amount

BILLABLE_STATUSES = ("trialing", "active", "past_due")
ENDED_STATUSES = ("canceled", "unpaid", "incomplete_expired")
# The statuses this server gives a subscription (Polar also lists "paused" in filters).
SubscriptionStatus = Literal[
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
]
ALL_STATUSES: tuple[str, ...] = get_args(SubscriptionStatus)


class AlreadyCanceled(ApiError):
    def __init__(self) -> None:
        super().__init__(
            403,
            "AlreadyCanceledSubscription",
            "This subscription is already canceled or will be at the end of the period.",
        )


class NotScheduledToCancel(ApiError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "SubscriptionNotScheduledToCancel",
            "This subscription is not scheduled to be canceled.",
        )


def lifecycle_events(prev_status: str, prev_ends_at: str | None, sub: JSON) -> list[str]:
    types = ["subscription.updated"]
    if sub["status"] in ACTIVE_STATUSES and prev_status not in ACTIVE_STATUSES:
        types.append("subscription.active")
    is_canceled = bool(sub["ends_at"] and sub["canceled_at"])
    if is_canceled and sub["ends_at"] != prev_ends_at:
        types.append("subscription.canceled")
    if prev_ends_at and not is_canceled:
        types.append("subscription.uncanceled")
    if sub["status"] == "past_due" and prev_status != "past_due":
        types.append("subscription.past_due")
    if sub["status"] in ENDED_STATUSES and prev_status not in ENDED_STATUSES:
        types.append("subscription.revoked")
    return types


class SubscriptionOps:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def create(
        self,
        customer: JSON,
        product: JSON,
        *,
        status: str = "active",
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        metadata: JSON | None = None,
        checkout_id: str | None = None,
        cancel_at_period_end: bool = False,
    ) -> JSON:
        now = self.ctx.now()
        start = period_start or now
        end = period_end or add_interval(
            start, product["recurring_interval"], product["recurring_interval_count"] or 1
        )
        core = new_subscription(
            customer,
            product,
            now=now,
            status=status,
            period_start=start,
            period_end=end,
            metadata=metadata,
            checkout_id=checkout_id,
        )
        apply_status(core, status, now)
        if cancel_at_period_end and core["ended_at"] is None:
            core.update(cancel_at_period_end=True, canceled_at=iso(now), ends_at=iso(end))
        with self.ctx.store.lock:
            self.ctx.store.put("subscription", core)
            if product.get("is_deletable", True):
                self.ctx.store.put("product", {**product, "is_deletable": False})
        types = ["subscription.created"]
        if status in ACTIVE_STATUSES:
            types.append("subscription.active")
        self.ctx.emit_subscription(types, core)
        return core

    def change(
        self, sub_id: str, mutate: Callable[[JSON], None], extra: tuple[str, ...] = ()
    ) -> JSON:
        """Apply `mutate` atomically, then send the webhooks the change implies."""
        with self.ctx.store.lock:
            core = self.ctx.require("subscription", sub_id)
            prev_status, prev_ends_at = core["status"], core["ends_at"]
            mutate(core)
            core["modified_at"] = iso(self.ctx.now())
            self.ctx.store.put("subscription", core)
        self.ctx.emit_subscription(
            [*lifecycle_events(prev_status, prev_ends_at, core), *extra], core
        )
        return core

    def cancel(self, sub_id: str, *, reason: str | None, comment: str | None) -> JSON:
        def mutate(core: JSON) -> None:
            if not _can_cancel(core, immediately=False):
                raise AlreadyCanceled()
            core.update(
                cancel_at_period_end=True,
                canceled_at=iso(self.ctx.now()),
                ends_at=core["current_period_end"],
            )
            _set_reason(core, reason, comment)

        return self.change(sub_id, mutate)

    def uncancel(self, sub_id: str) -> JSON:
        def mutate(core: JSON) -> None:
            if core["ended_at"] is not None:
                raise AlreadyCanceled()
            if not core["cancel_at_period_end"]:
                raise NotScheduledToCancel()
            core.update(
                cancel_at_period_end=False,
                canceled_at=None,
                ends_at=None,
                customer_cancellation_reason=None,
                customer_cancellation_comment=None,
            )

        return self.change(sub_id, mutate)

    def revoke(self, sub_id: str, *, reason: str | None = None, comment: str | None = None) -> JSON:
        def mutate(core: JSON) -> None:
            if not _can_cancel(core, immediately=True):
                raise AlreadyCanceled()
            apply_status(core, "canceled", self.ctx.now())
            _set_reason(core, reason, comment)

        return self.change(sub_id, mutate)

    def switch_product(self, sub_id: str, product: JSON) -> JSON:
        def mutate(core: JSON) -> None:
            if core["ended_at"] is not None:
                raise AlreadyCanceled()
            prices = [p for p in product["prices"] if not p["is_archived"]]
            amount, currency = subscription_amount(prices)
            core.update(
                product_id=product["id"],
                amount=amount,
                currency=currency,
                recurring_interval=product["recurring_interval"],
                recurring_interval_count=product["recurring_interval_count"] or 1,
                _price_ids=[p["id"] for p in prices],
            )

        return self.change(sub_id, mutate)

    def cycle(self, sub_id: str) -> JSON:
        """End the current period: renew, or end the subscription if it was set to cancel."""
        cycled: list[bool] = []

        def mutate(core: JSON) -> None:
            if core["ended_at"] is not None:
                raise AlreadyCanceled()
            end = parse_iso(core["current_period_end"])
            if core["cancel_at_period_end"]:
                core.update(status="canceled", ended_at=iso(end), ends_at=iso(end))
                return
            new_end = next_period_end(
                parse_iso(core["started_at"]),
                end,
                core["recurring_interval"],
                core["recurring_interval_count"],
            )
            core.update(current_period_start=iso(end), current_period_end=iso(new_end))
            if core["current_meter_period_start"] is not None:
                core.update(
                    current_meter_period_start=iso(end), current_meter_period_end=iso(new_end)
                )
            cycled.append(True)

        core = self.change(sub_id, mutate)
        if cycled:
            self.ctx.emit_subscription(["subscription.cycled"], core)
        return core

    def revoke_all_for_customer(self, customer_id: str) -> None:
        for core in self.ctx.store.all("subscription"):
            if core["customer_id"] == customer_id and _can_cancel(core, immediately=True):
                self.revoke(core["id"])


def next_period_end(anchor: datetime, current_end: datetime, interval: str, count: int) -> datetime:
    """Periods are counted from the start anchor, as Stripe does, so Jan 31 renews on Feb 28
    and then on Mar 31 rather than drifting to the 28th."""
    k = 1
    while (end := add_interval(anchor, interval, count * k)) <= current_end:
        k += 1
    return end


def _can_cancel(core: JSON, *, immediately: bool) -> bool:
    if core["status"] not in BILLABLE_STATUSES or core["ended_at"] is not None:
        return False
    return immediately or not (core["cancel_at_period_end"] or core["ends_at"])


def _set_reason(core: JSON, reason: str | None, comment: str | None) -> None:
    if reason is not None:
        core["customer_cancellation_reason"] = reason
    if comment is not None:
        core["customer_cancellation_comment"] = comment


def apply_status(core: JSON, status: str, now: datetime) -> None:
    core["status"] = status
    if status == "past_due":
        core["past_due_at"] = core.get("past_due_at") or iso(now)
    elif status in ACTIVE_STATUSES:
        core["past_due_at"] = None
    if status in ENDED_STATUSES and core["ended_at"] is None:
        core.update(ended_at=iso(now), ends_at=iso(now), cancel_at_period_end=False)
        core["canceled_at"] = core["canceled_at"] or iso(now)
