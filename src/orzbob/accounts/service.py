"""Orgs, API tokens and the principal a bearer token stands for."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from orzbob.accounts.models import ORG_ROLES, STAFF_ROLES, ApiToken, Org, OrgRow, Role
from orzbob.accounts.repository import account_repository
from orzbob.accounts.token_cache import TokenCache
from orzbob.catalog.models import Catalog
from orzbob.kit.db import on_commit
from orzbob.kit.errors import NotFound, Unauthorized, Unprocessable

TOKEN_PREFIX = "orz_"
# Authenticated tokens, at most 30 s old (revocations elsewhere take effect within that).
token_cache: TokenCache[Principal] = TokenCache(ttl=30.0)

# Run while an org is being deleted, in the same transaction with the org row locked: the
# instances domain stops the org's instances here, so their usage closes with the deletion.
OrgDeletingHook = Callable[[Session, Org, datetime, Catalog], object]
org_deleting_hooks: list[OrgDeletingHook] = []
# A plan change is a usage boundary (like a period end). `plan_changing_hooks` run before the
# org's plan moves, with the org row locked: metering records the usage up to the change
# under the old plan. `plan_changed_hooks` run after it (with the previous plan id): quota
# stores each period's plan and recomputes the current period's exhaustion.
PlanChangingHook = Callable[[Session, Org, datetime, Catalog], object]
PlanChangedHook = Callable[[Session, Org, str, datetime, Catalog], object]
plan_changing_hooks: list[PlanChangingHook] = []
plan_changed_hooks: list[PlanChangedHook] = []


@dataclass(frozen=True)
class Principal:
    token_id: uuid.UUID
    role: Role
    org_id: uuid.UUID | None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES


def hash_token(raw: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_role(value: str, *, staff: bool) -> Role:
    allowed = STAFF_ROLES if staff else ORG_ROLES
    try:
        role = Role(value)
    except ValueError:
        role = None
    if role not in allowed:
        names = ", ".join(r.value for r in allowed)
        raise Unprocessable(f"Unknown role {value!r}: choose one of {names}.")
    assert role is not None
    return role


class AccountService:
    def create_org(
        self,
        session: Session,
        *,
        name: str,
        billing_emails: list[str],
        plan_id: str | None,
        catalog: Catalog,
        now: datetime,
    ) -> Org:
        plan_id = plan_id or catalog.default_plan
        if not catalog.has_plan(plan_id):
            raise Unprocessable(
                f"Unknown plan {plan_id!r}: choose one of {', '.join(catalog.plan_ids)}."
            )
        org = Org(
            name=name,
            billing_emails=billing_emails,
            plan_id=plan_id,
            signup_at=now,
            spend_limit_cents=None,
            polar_customer_id=None,
            polar_subscription_id=None,
            subscription_period_start=None,
            subscription_period_end=None,
            polar_subscription_started_at=None,
            created_at=now,
            deleted_at=None,
        )
        session.add(org)
        session.flush()
        return org

    def get_org(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        lock: bool = False,
        include_deleted: bool = False,
    ) -> Org:
        """The org; a deleted one is NotFound unless `include_deleted` (system paths that
        must finish what a deleted org left behind)."""
        org = account_repository.get_org(
            session, org_id, lock=lock, include_deleted=include_deleted
        )
        if org is None:
            raise NotFound("Organization not found.")
        return org

    def list_orgs(self, session: Session, *, limit: int = 100, offset: int = 0) -> Sequence[Org]:
        return account_repository.list_orgs(session, limit=limit, offset=offset)

    def update_org(
        self,
        session: Session,
        org: Org,
        *,
        name: str | None = None,
        billing_emails: list[str] | None = None,
    ) -> Org:
        if name is not None:
            org.name = name
        if billing_emails is not None:
            org.billing_emails = billing_emails
        session.flush()
        return org

    def delete_org(
        self, session: Session, org_id: uuid.UUID, *, now: datetime, catalog: Catalog
    ) -> None:
        org = self.get_org(session, org_id, lock=True)
        for hook in org_deleting_hooks:
            hook(session, org, now, catalog)
        org.deleted_at = now
        session.flush()
        token_cache.drop_org(org.id)
        on_commit(session, lambda: token_cache.drop_org(org.id))

    def create_token(
        self,
        session: Session,
        *,
        org_id: uuid.UUID | None,
        role: str,
        name: str,
        now: datetime,
    ) -> tuple[ApiToken, str]:
        """Issue a token; the plaintext is returned once and only its hash is stored."""
        parsed = parse_role(role, staff=org_id is None)
        if org_id is not None:
            self.get_org(session, org_id)
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            org_id=org_id,
            role=parsed.value,
            name=name,
            token_hash=hash_token(raw),
            token_prefix=raw[:10],
            created_at=now,
            revoked_at=None,
        )
        session.add(token)
        session.flush()
        return token, raw

    def revoke_token(self, session: Session, token_id: uuid.UUID, *, now: datetime) -> None:
        token = account_repository.get_token(session, token_id)
        if token is None:
            raise NotFound("Token not found.")
        token.revoked_at = now
        session.flush()
        token_cache.drop_token(token_id)
        on_commit(session, lambda: token_cache.drop_token(token_id))

    def cached_principal(self, raw: str) -> Principal | None:
        """The principal of a token authenticated in the last 30 s, without a query."""
        return token_cache.get(hash_token(raw))

    @staticmethod
    def live_token_org() -> ColumnElement[uuid.UUID | None]:
        """The org of the unrevoked token whose hash (`hash_token`) is bound as
        `token_hash`, as a SQL expression (NULL for a staff token or none): a statement that
        authenticates as it acts. The caller checks the org is live."""
        return account_repository.live_token_org()

    def authenticate(self, session: Session, raw: str) -> Principal:
        """The principal a raw token stands for: from the token cache, or one query."""
        token_hash = hash_token(raw)
        cached = token_cache.get(token_hash)
        if cached is not None:
            return cached
        return self.admit(token_hash, account_repository.token_with_org(session, token_hash))

    def admit(self, token_hash: str, row: Any) -> Principal:
        """The principal of a token row read by hash (`token_with_org`'s columns, or a read
        model's that has them), now in the token cache; a revoked or unknown token (None)
        or a deleted org is Unauthorized."""
        if row is None or row.revoked_at is not None:
            raise Unauthorized("The API token is unknown or has been revoked.")
        if row.org_id is not None and (row.Org is None or row.Org.deleted_at is not None):
            raise Unauthorized("The organization of this API token no longer exists.")
        principal = Principal(token_id=row.id, role=Role(row.role), org_id=row.org_id)
        token_cache.put(token_hash, principal, token_id=row.id, org_id=row.org_id)
        return principal

    def set_plan(
        self, session: Session, org: Org, plan_id: str, *, catalog: Catalog, at: datetime
    ) -> Org:
        """Move the org (locked by the caller) to `plan_id` from the moment `at` (now, or the
        time a scheduled change fell due)."""
        if not catalog.has_plan(plan_id):
            raise Unprocessable(
                f"Unknown plan {plan_id!r}: choose one of {', '.join(catalog.plan_ids)}."
            )
        previous = org.plan_id
        if previous == plan_id:
            return org
        for changing in plan_changing_hooks:
            changing(session, org, at, catalog)
        org.plan_id = plan_id
        session.flush()
        for changed in plan_changed_hooks:
            changed(session, org, previous, at, catalog)
        return org

    def org_facts_by_id(
        self, session: Session, org_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, OrgRow]:
        """The facts of the orgs with these ids, deleted or not, by id, as plain rows (system
        paths over many orgs, such as a checkpoint batch; an unknown id is absent)."""
        return {o.id: o for o in account_repository.org_facts(session, org_ids)}


account_service = AccountService()
