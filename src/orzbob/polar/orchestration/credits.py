"""Shipping support credits to Polar (the `credits.polar` job): a fixed, once-only discount on
the subscription.

Polar applies a subscription's discount to its next invoice, the one that closes the current
period, and a subscription holds one discount at a time. So each run folds an org's pending
credits, plus any credit discount of ours still waiting on the subscription, into one new
discount and attaches it.

A credit never reaches two invoices:
* the discount each grant is put on is recorded (`polar_discount_id`) before it is attached,
  and its metadata lists the grants it carries;
* a grant whose discount is attached, or was redeemed by an invoice, is spent: a later run
  only marks it (a crash after attaching, before marking);
* a redeemed discount carries nothing forward; if an invoice redeems the waiting discount
  while a run replaces it, the run replaces its own discount with one that carries only the
  new grants.

The job runs alone (a PostgreSQL advisory lock), so two workers never fold the same org.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
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

Apps = list[PolarCreditApplication]
Outcome = str | tuple[str, bool]  # the discount id carrying the grants, or (error, permanent)
Recorder = Callable[[list[uuid.UUID], str], None]


def record_carried(runtime: Runtime) -> Recorder:
    """Commit which discount carries which grants, before the discount is attached."""

    def record(grant_ids: list[uuid.UUID], discount_id: str) -> None:
        with runtime.session() as session:
            credit_service.note_polar_discount(session, grant_ids, discount_id=discount_id)

    return record


def ship_credits_to_polar(runtime: Runtime) -> int | Idle:
    """Put pending credits on their customers' next Polar invoice (billing enabled only)."""
    now = runtime.clock.now()
    with runtime.session() as session:
        pending = credit_service.pending_polar_applications(session, limit=200)
    if not pending:
        return Idle(FOREVER)  # a grant is a request, and every advance wakes the jobs
    by_org: dict[uuid.UUID, Apps] = defaultdict(list)
    for app in pending:
        by_org[app.org_id].append(app)
    gateway = gateway_for(runtime)
    record = record_carried(runtime)
    for org_apps in by_org.values():
        for apps, outcome in _ship_org(gateway, org_apps, record=record):
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


def _carried(discount: Any) -> list[str]:
    return [i for i in str((discount.metadata or {}).get(CREDIT_KEY, "")).split(",") if i]


def _ship_org(gateway: PolarGateway, apps: Apps, *, record: Recorder) -> list[tuple[Apps, Outcome]]:
    """What happened to each of one org's grants: the discount now carrying (or that spent)
    them, or (error, permanent)."""
    sub_id = apps[0].polar_subscription_id
    if not sub_id:
        return [
            (
                apps,
                (
                    "the organization has no Polar subscription, so there is no invoice to "
                    "reduce; the credit still lowers its estimate here. Retry once it subscribes.",
                    True,
                ),
            )
        ]
    done: list[tuple[Apps, Outcome]] = []
    try:
        subscription: Any = gateway.get_subscription(sub_id)
        attached = str(subscription.discount_id) if subscription.discount_id else None
        waiting: Any = gateway.get_discount(attached) if attached else None
        if waiting is not None and not _carried(waiting):
            waiting = None  # not a credit discount of ours
        fresh: Apps = []
        for app in apps:
            spent = _spent_on(gateway, app, attached, waiting)
            if spent is None:
                fresh.append(app)
            else:
                done.append(([app], spent))
        carried = _carried(waiting) if waiting is not None and not waiting.redemptions_count else []
        fresh = fresh[: max(0, MAX_GRANTS_PER_DISCOUNT - len(carried))]
        if not fresh:
            return done
        carried_cents = int(waiting.amount) if carried else 0
        discount = _attach(gateway, sub_id, fresh, carried, carried_cents, record=record)
        if carried and gateway.get_discount(waiting.id).redemptions_count > 0:
            # An invoice used the waiting discount while we replaced it: its grants are
            # spent, so ours must not carry them a second time.
            log.warning("discount %s was redeemed during the run; reissuing", waiting.id)
            discount = _attach(gateway, sub_id, fresh, [], 0, record=record)
    except PolarUnavailable as exc:
        return [*done, (_unresolved(apps, done), (str(exc), False))]
    except PolarRejected as exc:
        return [*done, (_unresolved(apps, done), (str(exc), True))]
    ids = [str(a.grant_id) for a in fresh]
    log.info("credits %s now on Polar subscription %s as discount %s", ids, sub_id, discount)
    return [*done, (fresh, discount)]


def _spent_on(
    gateway: PolarGateway, app: PolarCreditApplication, attached: str | None, waiting: Any
) -> str | None:
    """The discount that already carries this grant to an invoice (attached now, or
    redeemed), else None: it still needs one."""
    if waiting is not None and str(app.grant_id) in _carried(waiting):
        return str(waiting.id)
    if app.discount_id is None:
        return None
    if app.discount_id == attached:
        return attached
    recorded: Any = gateway.get_discount(app.discount_id)
    return app.discount_id if recorded.redemptions_count > 0 else None


def _attach(
    gateway: PolarGateway,
    sub_id: str,
    apps: Apps,
    carried: list[str],
    carried_cents: int,
    *,
    record: Recorder,
) -> str:
    amount = carried_cents + sum(a.amount_cents for a in apps)
    discount = gateway.create_discount(
        name=f"Orzbob Cloud credit {format_usd(from_cents(amount))}",
        type="fixed",
        duration="once",
        amount=amount,
        currency="usd",
        max_redemptions=1,
        metadata={
            CREDIT_KEY: ",".join([*carried, *(str(a.grant_id) for a in apps)]),
            ORG_KEY: str(apps[0].org_id),
        },
    )
    record([a.grant_id for a in apps], str(discount.id))
    gateway.set_subscription_discount(sub_id, discount.id)
    return str(discount.id)


def _unresolved(apps: Apps, done: list[tuple[Apps, Outcome]]) -> Apps:
    handled = {a.grant_id for group, _ in done for a in group}
    return [a for a in apps if a.grant_id not in handled]
