"""A small generic repository base: the queries every domain repeats, written once.

A domain's `repository.py` subclasses `Repository[Model]` and adds the queries only that domain
knows; services call repositories, endpoints, tasks and the CLI call services, and nobody
queries another domain's tables (docs/architecture.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from orzbob.kit.db import Base, insert_ignore

M = TypeVar("M", bound=Base)


class Repository(Generic[M]):
    """`model` is the table this repository owns. `key_share` locks (`FOR NO KEY UPDATE`) let
    inserts that reference the row go on while it is locked (the lock order of
    docs/architecture.md starts with the org row)."""

    model: ClassVar[type[Any]]

    def get(
        self,
        session: Session,
        id_: uuid.UUID,
        *where: ColumnElement[bool],
        lock: bool = False,
        key_share: bool = False,
    ) -> M | None:
        """The row with this id (and matching `where`), optionally locked."""
        stmt: Select[M] = select(self.model).where(self.model.id == id_, *where)
        if lock:
            stmt = stmt.with_for_update(key_share=key_share)
        return session.scalars(stmt).one_or_none()

    def page(
        self, session: Session, stmt: Select[M], *, limit: int, offset: int = 0
    ) -> Sequence[M]:
        """One page of `stmt`, in id order unless `stmt` gives its own order."""
        if not stmt._order_by_clauses:
            stmt = stmt.order_by(self.model.id)
        return session.scalars(stmt.limit(limit).offset(offset)).all()

    def insert_ignore(self, session: Session, rows: Sequence[dict[str, Any]]) -> int:
        """Insert `rows`, skipping those that collide with a unique key; returns how many were
        inserted."""
        return insert_ignore(session, self.model.__table__, rows)
