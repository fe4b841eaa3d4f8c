from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orzbob.accounts.models import ApiToken, Org


class AccountRepository:
    def get_org(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        lock: bool = False,
        include_deleted: bool = False,
    ) -> Org | None:
        stmt = select(Org).where(Org.id == org_id)
        if not include_deleted:
            stmt = stmt.where(Org.deleted_at.is_(None))
        if lock:
            stmt = stmt.with_for_update(key_share=True)
        return session.scalars(stmt).one_or_none()

    def list_orgs(self, session: Session, *, limit: int, offset: int) -> Sequence[Org]:
        stmt = (
            select(Org).where(Org.deleted_at.is_(None)).order_by(Org.id).limit(limit).offset(offset)
        )
        return session.scalars(stmt).all()

    def token_with_org(self, session: Session, token_hash: str) -> Any:
        """The token and whether its org is deleted, in one query."""
        return session.execute(
            select(
                ApiToken.id,
                ApiToken.role,
                ApiToken.org_id,
                ApiToken.revoked_at,
                Org.deleted_at.is_not(None).label("org_deleted"),
            )
            .outerjoin(Org, Org.id == ApiToken.org_id)
            .where(ApiToken.token_hash == token_hash)
        ).one_or_none()


account_repository = AccountRepository()
