"""The generic repository base, on a real table (orgs); the work is rolled back after each test."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.accounts.repository import AccountRepository
from orzbob.kit.db import new_id

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _row(name: str) -> dict[str, object]:
    return {
        "id": new_id(),
        "name": name,
        "billing_emails": [f"{name}@repo.test"],
        "plan_id": "free-tier",
        "signup_at": T0,
        "created_at": T0,
    }


def test_get_page_and_insert_ignore(db_session: Session) -> None:
    repo = AccountRepository()
    rows = [_row(f"org{i}") for i in range(5)]
    assert repo.insert_ignore(db_session, rows) == 5
    assert repo.insert_ignore(db_session, rows[:2]) == 0  # same ids: skipped, not an error

    first = repo.get(db_session, rows[0]["id"], lock=True, key_share=True)  # type: ignore[arg-type]
    assert first is not None and first.name == "org0"
    assert repo.get(db_session, new_id()) is None
    assert repo.get(db_session, rows[1]["id"], Org.name == "elsewhere") is None  # type: ignore[arg-type]

    everything = select(Org).where(Org.name.like("org%"))
    pages = [repo.page(db_session, everything, limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [o.id for p in pages for o in p] == sorted(r["id"] for r in rows)  # type: ignore[type-var]


def test_a_deleted_org_is_hidden_unless_asked_for(db_session: Session) -> None:
    repo = AccountRepository()
    row = _row("gone")
    repo.insert_ignore(db_session, [row])
    org = repo.get(db_session, row["id"])  # type: ignore[arg-type]
    assert org is not None
    org.deleted_at = T0
    db_session.flush()
    assert repo.get_org(db_session, org.id) is None
    assert repo.get_org(db_session, org.id, include_deleted=True) is org
    assert repo.list_orgs(db_session, limit=10, offset=0) == []
