"""Shipping support credits to Polar: a fixed, once-only discount on the subscription.

Polar applies a subscription's discount to its next invoice, the one that closes the current
period, and a subscription holds one discount at a time. So each run folds an org's pending
credits, plus any credit discount of ours still waiting on the subscription, into one new
discount and attaches it. The discount's metadata lists the grants it carries: a run that
finds them already on the subscription (a crash after attaching, before marking) only marks
them, so a credit never reaches the invoice twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any

from orzbob.credits.service import PolarCreditApplication, credit_service
from orzbob.kit.clock import FOREVER, Idle
from orzbob.kit.money import format_usd, from_cents
from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable, gateway_for
from orzbob.runtime import Runtime

log = logging.getLogger(__name__)

CREDIT_KEY = "orzbob_credit_ids"
ORG_KEY = "orzbob_org_id"
# Polar metadata values hold 500 characters: room for 12 grant ids in one discount. Grants
# beyond that stay pending until the discount is used and a new one can carry them.
MAX_GRANTS_PER_DISCOUNT = 12


def ship_credits_to_polar(runtime: Runtime) -> int | Idle:
    """Put pending credits on their customers' next Polar invoice (billing enabled only)."""
    now = runtime.clock.now()
    with runtime.session() as session:
        pending = credit_service.pending_polar_applications(session, limit=200)
    if not pending:
        return Idle(FOREVER)  # a grant is a request, and every advance wakes the jobs
    by_org: dict[uuid.UUID, list[PolarCreditApplication]] = defaultdict(list)
    for app in pending:
        by_org[app.org_id].append(app)
    gateway = gateway_for(runtime)
    for org_apps in by_org.values():
        apps, outcome = _ship_org(gateway, org_apps)
        with runtime.session() as session:
            for app in apps:
                if isinstance(outcome, str):
                    credit_service.mark_polar_applied(
                        session, app.grant_id, reference=outcome, now=now
                    )
                else:
                    error, permanent = outcome
                    credit_service.mark_polar_failed(
                        session, app.grant_id, error=error, permanent=permanent
                    )
    return 0


def _ship_org(
    gateway: PolarGateway, apps: list[PolarCreditApplication]
) -> tuple[list[PolarCreditApplication], str | tuple[str, bool]]:
    """The grants handled, and the discount id now carrying them or (error, permanent)."""
    sub_id = apps[0].polar_subscription_id
    if not sub_id:
        return apps, (
            "the organization has no Polar subscription, so there is no invoice to reduce; "
            "the credit still lowers its estimate here. Retry once it subscribes.",
            True,
        )
    try:
        carried_ids, carried_cents, current = _waiting_credit(gateway, sub_id)
        done = [a for a in apps if str(a.grant_id) in carried_ids]
        if done:
            return done, current  # attached by an earlier run that died before marking
        apps = apps[: max(0, MAX_GRANTS_PER_DISCOUNT - len(carried_ids))]
        if not apps:
            return [], current
        ids = [str(a.grant_id) for a in apps]
        amount = carried_cents + sum(a.amount_cents for a in apps)
        discount = gateway.create_discount(
            name=f"Orzbob Cloud credit {format_usd(from_cents(amount))}",
            type="fixed",
            duration="once",
            amount=amount,
            currency="usd",
            max_redemptions=1,
            metadata={CREDIT_KEY: ",".join([*carried_ids, *ids]), ORG_KEY: str(apps[0].org_id)},
        )
        gateway.set_subscription_discount(sub_id, discount.id)
    except PolarUnavailable as exc:
        return apps, (str(exc), False)
    except PolarRejected as exc:
        return apps, (str(exc), True)
    log.info("credits %s now on Polar subscription %s as discount %s", ids, sub_id, discount.id)
    return apps, str(discount.id)


def _waiting_credit(gateway: PolarGateway, sub_id: str) -> tuple[list[str], int, str]:
    """The grants, amount and id of a credit discount of ours on the subscription that no
    invoice has used yet (else nothing)."""
    subscription: Any = gateway.get_subscription(sub_id)
    if not subscription.discount_id:
        return [], 0, ""
    discount: Any = gateway.get_discount(subscription.discount_id)
    carried = str((discount.metadata or {}).get(CREDIT_KEY, ""))
    if not carried or discount.redemptions_count > 0:
        return [], 0, ""
    return [i for i in carried.split(",") if i], int(discount.amount), str(discount.id)
