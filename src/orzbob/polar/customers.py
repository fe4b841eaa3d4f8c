"""Orgs as Polar customers: the org id is the customer's `external_id`, the Polar id is kept
in `orgs.polar_customer_id`. These methods work inside the caller's transaction; creating the
customer at Polar, between two of them, is `polar.orchestration.customers`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.accounts.repository import account_repository
from orzbob.kit.errors import Conflict, NotFound
from orzbob.metering.models import UsageRecord

log = logging.getLogger(__name__)


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
        """Orgs that recorded usage but are not Polar customers yet."""
        # Still reads metering's table (docs/architecture.md, "Remaining debt").
        has_usage = exists().where(UsageRecord.org_id == Org.id)
        stmt = (
            select(Org.id)
            .where(Org.polar_customer_id.is_(None), Org.deleted_at.is_(None), has_usage)
            .order_by(Org.id)
            .limit(limit)
        )
        return list(session.scalars(stmt))


customer_service = CustomerService()
