from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ScalarSelect, bindparam, select
from sqlalchemy.orm import Session

from orzbob.accounts.models import ORG_ROW_COLUMNS, ApiToken, Org, OrgRow
from orzbob.kit.db import one_of
from orzbob.kit.repository import Repository

# Built once: authentication runs on every request whose token the cache does not know.
_TOKEN_WITH_ORG = (
    select(ApiToken.id, ApiToken.role, ApiToken.org_id, ApiToken.revoked_at, Org)
    .outerjoin(Org, Org.id == ApiToken.org_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)

# The org of a live org token, as a scalar subquery on the bound `token_hash`: a statement
# that acts for the token's org reads it in its own round trip (the quick heartbeat). Built
# once; a revoked or staff token gives no org (NULL).
_LIVE_TOKEN_ORG: ScalarSelect[uuid.UUID | None] = (
    select(ApiToken.org_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
    .scalar_subquery()
)


class AccountRepository(Repository[Org]):
    model = Org

    def get_org(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        lock: bool = False,
        include_deleted: bool = False,
    ) -> Org | None:
        if not lock:
            # By primary key through the session's identity map: no statement to build, and
            # none to run when the org is already loaded (the hot paths read it often).
            org = session.get(Org, org_id)
            if org is None or (org.deleted_at is not None and not include_deleted):
                return None
            return org
        live = () if include_deleted else (Org.deleted_at.is_(None),)
        return self.get(session, org_id, *live, lock=lock, key_share=True)

    def list_orgs(self, session: Session, *, limit: int, offset: int) -> Sequence[Org]:
        return self.page(
            session, select(Org).where(Org.deleted_at.is_(None)), limit=limit, offset=offset
        )

    def get_token(self, session: Session, token_id: uuid.UUID) -> ApiToken | None:
        return session.get(ApiToken, token_id)

    def without_polar_customer(
        self, session: Session, *, after: uuid.UUID | None, limit: int
    ) -> list[uuid.UUID]:
        """Ids of live orgs that are no Polar customer yet, in id order, after `after`."""
        stmt = select(Org.id).where(Org.polar_customer_id.is_(None), Org.deleted_at.is_(None))
        if after is not None:
            stmt = stmt.where(Org.id > after)
        return list(session.scalars(stmt.order_by(Org.id).limit(limit)))

    def by_polar_customer(
        self, session: Session, customer_id: str, *, lock: bool = False
    ) -> Org | None:
        """The live org mapped to this Polar customer id (the first by id, should two be)."""
        stmt = (
            select(Org)
            .where(Org.polar_customer_id == customer_id, Org.deleted_at.is_(None))
            .order_by(Org.id)
            .limit(1)
        )
        if lock:
            stmt = stmt.with_for_update(key_share=True)
        return session.scalars(stmt).one_or_none()

    def token_with_org(self, session: Session, token_hash: str) -> Any:
        """The token with its org (None for a staff token), in one prebuilt query. The org is
        loaded as an entity, so the request's later reads of it (`get_org` by primary key)
        find it in the session's identity map and cost no second round trip."""
        row = session.execute(_TOKEN_WITH_ORG, {"token_hash": token_hash}).one_or_none()
        if row is not None and row.Org is not None:
            # The identity map holds objects weakly: keep the org alive for the transaction.
            session.info.setdefault("loaded", []).append(row.Org)
        return row

    @staticmethod
    def live_token_org() -> ScalarSelect[uuid.UUID | None]:
        """The org id of the unrevoked token whose hash is bound as `token_hash`, as a
        scalar subquery (NULL for a staff token or none); the caller checks the org."""
        return _LIVE_TOKEN_ORG

    def org_facts(self, session: Session, org_ids: Sequence[uuid.UUID]) -> list[OrgRow]:
        """The facts of the orgs with these ids, deleted or not, as plain rows (unordered; an
        unknown id is absent)."""
        return [
            OrgRow(*row)
            for row in session.execute(
                select(*ORG_ROW_COLUMNS).where(one_of(session, Org.id, org_ids))
            )
        ]


account_repository = AccountRepository()
