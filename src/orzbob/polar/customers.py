"""Orgs as Polar customers: the org id is the customer's `external_id`.

A customer is created on demand (see `sync_missing_customers` and the checkout endpoint) and
its Polar id kept in `orgs.polar_customer_id`. No Polar call is made while a transaction is
open: read what is needed and close, call Polar, then write in a new short transaction.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from orzbob.accounts.models import Org
from orzbob.accounts.repository import account_repository
from orzbob.kit.db import session_scope
from orzbob.kit.errors import Conflict, NotFound
from orzbob.metering.models import UsageRecord
from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable

log = logging.getLogger(__name__)

# Polar answers a duplicate with 422 at one of these locations.
_DUPLICATE_FIELDS = ("body.email", "body.external_id")


class CustomerConflict(Conflict):
    """Every billing e-mail of the org already belongs to another Polar customer."""


@dataclass(frozen=True)
class _OrgSnapshot:
    id: uuid.UUID
    name: str
    emails: list[str]
    polar_customer_id: str | None


class CustomerService:
    def ensure_customer(
        self, sessions: sessionmaker[Session], gateway: PolarGateway, org_id: uuid.UUID
    ) -> str:
        """The org's Polar customer id, creating the customer first if it has none.

        Takes the session factory rather than a session: the Polar call must happen between
        two short transactions, never inside one.
        """
        with session_scope(sessions) as session:
            org = account_repository.get_org(session, org_id)
            if org is None:
                raise NotFound("Organization not found.")
            snap = _OrgSnapshot(org.id, org.name, list(org.billing_emails), org.polar_customer_id)
        if snap.polar_customer_id:
            return snap.polar_customer_id
        customer_id = self._create_or_find(gateway, snap)
        with session_scope(sessions) as session:
            org = account_repository.get_org(session, org_id, lock=True)
            if org is None:  # deleted meanwhile; the Polar customer stays for the records
                raise NotFound("Organization not found.")
            if org.polar_customer_id and org.polar_customer_id != customer_id:
                # A subscription webhook got there first; it names the paying customer.
                log.warning(
                    "org %s already maps to Polar customer %s, not %s; keeping it",
                    org_id,
                    org.polar_customer_id,
                    customer_id,
                )
                return org.polar_customer_id
            org.polar_customer_id = customer_id
        log.info("org %s is Polar customer %s", org_id, customer_id)
        return customer_id

    def _create_or_find(self, gateway: PolarGateway, org: _OrgSnapshot) -> str:
        external_id = str(org.id)
        for email in org.emails:
            try:
                return gateway.create_customer(
                    email=email, name=org.name, external_id=external_id
                ).id
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

    def orgs_without_customer(self, session: Session, *, limit: int) -> list[uuid.UUID]:
        """Orgs that recorded usage but are not Polar customers yet."""
        has_usage = exists().where(UsageRecord.org_id == Org.id)
        stmt = (
            select(Org.id)
            .where(Org.polar_customer_id.is_(None), Org.deleted_at.is_(None), has_usage)
            .order_by(Org.id)
            .limit(limit)
        )
        return list(session.scalars(stmt))


customer_service = CustomerService()


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
            customer_service.ensure_customer(sessions, gateway, org_id)
            created += 1
        except PolarUnavailable as exc:
            log.warning("Polar customer creation paused: %s", exc)
            return created, failed + 1
        except (PolarRejected, CustomerConflict, NotFound) as exc:
            failed += 1
            log.error("cannot make org %s a Polar customer: %s", org_id, exc)
    return created, failed
