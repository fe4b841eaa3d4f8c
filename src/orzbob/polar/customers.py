"""Orgs as Polar customers: the org id is the customer's `external_id`, the Polar id is kept
in `orgs.polar_customer_id`. These methods work inside the caller's transaction; creating the
customer at Polar, between two of them, is `polar.orchestration.customers`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from orzbob.accounts.repository import account_repository
from orzbob.kit.errors import Conflict, NotFound
from orzbob.metering.repository import usage_records

log = logging.getLogger(__name__)
# Orgs without a customer are read a page at a time; a page's usage is probed in one query.
PAGE = 200


class CustomerConflict(Conflict):
    """Every billing e-mail of the org already belongs to another Polar customer."""


@dataclass(frozen=True)
class OrgSnapshot:
    """What creating the customer needs, read before the transaction closes."""

    id: uuid.UUID
    name: str
    emails: list[str]
    polar_customer_id: str | None


class CustomerService:
    def snapshot(self, session: Session, org_id: uuid.UUID) -> OrgSnapshot:
        org = account_repository.get_org(session, org_id)
        if org is None:
            raise NotFound("Organization not found.")
        return OrgSnapshot(org.id, org.name, list(org.billing_emails), org.polar_customer_id)

    def record_customer(self, session: Session, org_id: uuid.UUID, customer_id: str) -> str:
        """Keep the org's Polar customer id, unless a subscription webhook already named the
        paying customer; returns the id the org now maps to."""
        org = account_repository.get_org(session, org_id, lock=True)
        if org is None:  # deleted meanwhile; the Polar customer stays for the records
            raise NotFound("Organization not found.")
        if org.polar_customer_id and org.polar_customer_id != customer_id:
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

    def orgs_without_customer(self, session: Session, *, limit: int) -> list[uuid.UUID]:
        """Orgs that recorded usage but are not Polar customers yet, in id order."""
        out: list[uuid.UUID] = []
        after: uuid.UUID | None = None
        while len(out) < limit:
            page = account_repository.without_polar_customer(session, after=after, limit=PAGE)
            used = usage_records.orgs_with_usage(session, page)
            out.extend(org_id for org_id in page if org_id in used)
            if len(page) < PAGE:
                break
            after = page[-1]
        return out[:limit]


customer_service = CustomerService()
