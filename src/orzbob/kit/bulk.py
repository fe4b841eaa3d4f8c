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
    keys: Sequence[str],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Set `columns` of the rows identified by `keys` (each tuple holds the key values, then
    the column values), in one statement on PostgreSQL (`UPDATE … FROM unnest(…)`), an
    `executemany` elsewhere. The caller already holds the rows' locks."""
    if not rows:
        return
    conn = session.connection()
    names = [*keys, *columns]
    if conn.dialect.name == "postgresql":
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        match = " AND ".join(f"{table.name}.{k} = v.{k}" for k in keys)
        sql = (
            f"UPDATE {table.name} SET {sets} "
            f"FROM unnest({_pg_arrays(conn, table, names)}) AS v({', '.join(names)}) "
            f"WHERE {match}"
        )
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            cursor.execute(sql, [list(col) for col in zip(*rows, strict=True)])
        return
    stmt = (
        update(table)
        .where(*[table.c[k] == bindparam("k_" + k) for k in keys])
        .values({c: bindparam("v_" + c) for c in columns})
    )
    params = ["k_" + k for k in keys] + ["v_" + c for c in columns]
    conn.execute(stmt, [dict(zip(params, r, strict=True)) for r in rows])


def _pg_arrays(conn: Any, table: Table, names: Sequence[str]) -> str:
    return ", ".join(f"%s::{table.c[n].type.compile(dialect=conn.dialect)}[]" for n in names)


def upsert_add_pg(
    session: Session, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> bool:
    """`kit.db.upsert_add` as one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE` on
    PostgreSQL (one statement, one round trip, whatever the number of rows); False on
    another database, for the caller to fall back."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return False
    session.flush()
    names = list(rows[0])
    adds = ", ".join(f"{n} = {table.name}.{n} + EXCLUDED.{n}" for n in names if n not in keys)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT * FROM unnest({_pg_arrays(conn, table, names)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        cursor.execute(sql, [[r[n] for r in rows] for n in names])
    return True
