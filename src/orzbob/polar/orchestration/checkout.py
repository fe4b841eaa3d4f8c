"""Starting a Polar checkout for an org's upgrade: read, close, then call Polar (the customer
first, then the checkout). The plan changes when Polar reports the subscription, not here."""

from __future__ import annotations

import uuid
from typing import Any

from orzbob.accounts.repository import account_repository
from orzbob.catalog.models import Plan
from orzbob.kit.errors import Conflict, NotFound, OrzbobError
from orzbob.polar.client import gateway_for
from orzbob.polar.orchestration.customers import ensure_customer
from orzbob.polar.sync import PLAN_KEY
from orzbob.runtime import Runtime


class PolarUnavailableError(OrzbobError):
    status_code = 503
    error = "polar_unavailable"


class PolarRefusedError(OrzbobError):
    status_code = 502
    error = "polar_error"


def start_checkout(runtime: Runtime, org_id: uuid.UUID, plan: Plan) -> Any:
    """Polar's checkout moving the org to `plan`. Raises the gateway's PolarUnavailable and
    PolarRejected for the caller to explain."""
    # Read and close before any Polar call: no transaction is held across the network.
    with runtime.session() as session:
        org = account_repository.get_org(session, org_id)
        if org is None:
            raise NotFound("Organization not found.")
        if org.plan_id == plan.id and org.polar_subscription_id:
            raise Conflict(
                f"The organization is already subscribed to {plan.name}; manage or resume "
                "the subscription in the Polar customer portal."
            )
    gateway = gateway_for(runtime)
    ensure_customer(runtime.sessions, gateway, org_id)
    products = gateway.list_products(metadata={PLAN_KEY: plan.id})
    live = [p for p in products if not p.is_archived]  # oldest first, as sync picks
    if not live:
        raise PolarUnavailableError(
            f"The {plan.name} plan is not set up in Polar yet (run `orz polar sync`)."
        )
    return gateway.create_checkout(
        products=[live[0].id],
        external_customer_id=str(org_id),
        success_url=runtime.settings.public_url.rstrip("/") + "/?checkout={CHECKOUT_ID}",
        metadata={"orzbob_org": str(org_id), PLAN_KEY: plan.id},
    )
