"""Set-based writes for the high-volume paths: append rows with `COPY` on PostgreSQL, and
update many rows by key in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.orm import Session


def append_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert new rows (fresh keys, no conflict expected) in the session's transaction:
    `COPY … FROM STDIN` on PostgreSQL (several times faster than any INSERT), an
    `executemany` elsewhere. Pending ORM changes are flushed first."""
    if not rows:
        return
    session.flush()
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def update_by_key(
    session: Session,
    table: Table,
    key: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Set `columns` of the rows whose `key` is each tuple's first value, in one statement on
    PostgreSQL (`UPDATE … FROM unnest(…)`), an `executemany` elsewhere. Rows are updated in
    the given order; the caller already holds their locks."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        names = [key, *columns]
        types = [table.c[n].type.compile(dialect=conn.dialect) for n in names]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        sql = (
            f"UPDATE {table.name} SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
            f"WHERE {table.name}.{key} = v.{key}"
        )
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            cursor.execute(sql, [list(col) for col in zip(*rows, strict=True)])
        return
    stmt = (
        update(table)
        .where(table.c[key] == bindparam("k_" + key))
        .values({c: bindparam("v_" + c) for c in columns})
    )
    conn.execute(
        stmt,
        [
            {"k_" + key: r[0], **{"v_" + c: v for c, v in zip(columns, r[1:], strict=True)}}
            for r in rows
        ],
    )
