"""Creating an org's Polar customer, on demand (checkout) or for every org with usage (the
`polar.customers` job)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session, sessionmaker

from orzbob.kit.db import session_scope
from orzbob.kit.errors import NotFound
from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable
from orzbob.polar.customers import CustomerConflict, OrgSnapshot, customer_service

log = logging.getLogger(__name__)

# Polar answers a duplicate with 422 at one of these locations.
_DUPLICATE_FIELDS = ("body.email", "body.external_id")


def ensure_customer(
    sessions: sessionmaker[Session], gateway: PolarGateway, org_id: uuid.UUID
) -> str:
    """The org's Polar customer id, creating the customer first if it has none."""
    with session_scope(sessions) as session:
        snap = customer_service.snapshot(session, org_id)
    if snap.polar_customer_id:
        return snap.polar_customer_id
    customer_id = _create_or_find(gateway, snap)
    with session_scope(sessions) as session:
        return customer_service.record_customer(session, org_id, customer_id)


def _create_or_find(gateway: PolarGateway, org: OrgSnapshot) -> str:
    external_id = str(org.id)
    for email in org.emails:
        try:
            return gateway.create_customer(email=email, name=org.name, external_id=external_id).id
        except PolarRejected as exc:
            if exc.status != 422 or not any(f in exc.fields for f in _DUPLICATE_FIELDS):
                raise
        # Created before (a crash after the call, or a concurrent caller), or the e-mail
        # is another customer's. Checking first would not be atomic, so look now.
        existing = gateway.get_customer_external(external_id)
        if existing is not None:
            return existing.id
    raise CustomerConflict(
        "Every billing e-mail of this organization is already used by another Polar "
        "customer; add a billing contact with a different e-mail address."
    )


def sync_missing_customers(
    sessions: sessionmaker[Session], gateway: PolarGateway, *, limit: int = 25
) -> tuple[int, int]:
    """Create Polar customers for orgs with usage and none yet; returns (created, failed).

    A few per run: Polar's rate limit (500 requests/min, 100 in the sandbox) is shared with
    the flusher, which matters more. Stops at the first sign that Polar is unavailable (or
    rate limiting); the next run tries again.
    """
    with session_scope(sessions) as session:
        org_ids = customer_service.orgs_without_customer(session, limit=limit)
    created = failed = 0
    for org_id in org_ids:
        try:
            ensure_customer(sessions, gateway, org_id)
            created += 1
        except PolarUnavailable as exc:
            log.warning("Polar customer creation paused: %s", exc)
            return created, failed + 1
        except (PolarRejected, CustomerConflict, NotFound) as exc:
            failed += 1
            log.error("cannot make org %s a Polar customer: %s", org_id, exc)
    return created, failed
