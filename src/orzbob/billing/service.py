"""The billing read model behind GET /v1/billing: the quota status composed with the caps
that hold now and the ones coming within the hour, and the period's latest budget alert."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from orzbob.accounts.models import OrgFacts
from orzbob.accounts.service import Principal, account_service, hash_token
from orzbob.alerts.service import alert_service
from orzbob.billing.repository import Runs, billing_repository
from orzbob.billing.schemas import BillingOut, ThrottleOut, UpcomingOut
from orzbob.catalog.models import Catalog
from orzbob.credits.service import credit_service
from orzbob.kit.db import Reader
from orzbob.kit.errors import NotFound
from orzbob.quota.allocation import org_period
from orzbob.quota.service import PeriodFacts, quota_service
from orzbob.throttle.status import throttle_status


class BillingService:
    def head(
        self, db: Reader, raw_token: str, cached: Principal | None
    ) -> tuple[Principal, OrgFacts | None, Runs]:
        """Who is asking (a token the cache knows, or one read by hash and admitted as
        `account_service.authenticate` would), with their org and its open runs, in one
        statement. The org is None for a staff token or an org that is gone."""
        if cached is not None:
            if cached.org_id is None:
                return cached, None, []
            org, runs = billing_repository.org_head(db, cached.org_id)
            return cached, org, runs
        token_hash = hash_token(raw_token)
        row, runs = billing_repository.token_head(db, token_hash)
        principal = account_service.admit(token_hash, row)
        assert row is not None  # admit refuses an unknown token
        return principal, row.Org, runs

    def read_head(
        self,
        session: Session,
        org: OrgFacts | None,
        runs: Runs,
        *,
        catalog: Catalog,
        now: datetime,
        db: Reader | None = None,
    ) -> BillingOut:
        """`read` of the org and open runs `head` gave."""
        if org is None or org.deleted_at is not None:
            raise NotFound("Organization not found.")
        return self.read(session, org, catalog=catalog, now=now, runs=runs, db=db)

    def read(
        self,
        session: Session,
        org: OrgFacts,
        *,
        catalog: Catalog,
        now: datetime,
        runs: Runs | None = None,
        db: Reader | None = None,
    ) -> BillingOut:
        """The billing object of the org; `runs`: its open runs, when the caller has read
        them (`head`). `db`: where the snapshot statement runs, if not on `session` (which
        then serves only what few orgs need: credit grants, an alert, ...)."""
        period = org_period(org, now)
        snap = billing_repository.snapshot(db or session, org.id, period.start, now)
        facts = PeriodFacts(
            used_small_minutes=snap.used_small_minutes,
            exhausted_at=snap.exhausted_at,
            rollups=snap.rollups,
            today_minutes=snap.today_minutes,
            grants=credit_service.grants_until(session, org.id, now) if snap.grants else [],
        )
        status = quota_service.status(session, org, catalog=catalog, now=now, facts=facts)
        if runs is not None:
            pairs = runs
        else:
            pairs = throttle_status.open_runs(session, org.id) if snap.open_runs else []
        throttles = [
            ThrottleOut(cap=t.cap, detail=t.detail, lifts_at=t.lifts_at)
            for t in throttle_status.active(status, catalog)
        ]
        upcoming = [
            UpcomingOut(
                cap=u.cap,
                at=u.at,
                instance_id=u.instance_id,
                instance_name=u.instance_name,
                detail=u.detail,
            )
            for u in throttle_status.upcoming(
                session, org, catalog=catalog, now=now, status=status, pairs=pairs
            )
        ]
        return BillingOut.from_status(
            status,
            throttles=throttles,
            upcoming=upcoming,
            last_alert=(
                alert_service.last_alert(session, org.id, status.period.start)
                if snap.has_alert
                else None
            ),
        )

    def read_of(
        self, session: Session, org_id: uuid.UUID, *, catalog: Catalog, now: datetime
    ) -> BillingOut:
        return self.read(
            session, account_service.get_org(session, org_id), catalog=catalog, now=now
        )


billing_service = BillingService()
