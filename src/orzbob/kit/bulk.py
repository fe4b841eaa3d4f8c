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
    binary `COPY … FROM STDIN` on PostgreSQL (several times faster than any INSERT), an
    `executemany` elsewhere. Pending ORM changes are flushed first."""
    if not rows:
        return
    session.flush()
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        dbapi = conn.connection.driver_connection
        types = _column_oids(conn.info, dbapi, table, columns)
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with cursor, cursor.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        return
    conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def _column_oids(
    info: dict[Any, Any], dbapi: Any, table: Table, columns: Sequence[str]
) -> list[int]:
    """The PostgreSQL type of each column, as the database has it (a binary `COPY` must send
    exactly those types): read once per connection from an empty `SELECT`."""
    key = ("orzbob.column_oids", table.name, tuple(columns))
    oids: list[int] | None = info.get(key)
    if oids is None:
        with dbapi.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table.name} LIMIT 0")
            oids = [d.type_code for d in cursor.description]
        info[key] = oids
    return oids


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
        # The first key again as `= ANY(array)`: an index condition. Joined to the unnest
        # alone, the planner hashes the whole table on every call (a batch of a thousand
        # segments read all the open segments of the fleet).
        # Named parameters: the first key's array is sent (and dumped) once for both uses.
        first = keys[0]
        sql = (
            f"UPDATE {table.name} SET {sets} "
            f"FROM unnest({_pg_arrays(conn, table, names, named=True)}) "
            f"AS v({', '.join(names)}) "
            f"WHERE {match} AND {table.name}.{first} = "
            f"ANY({_pg_arrays(conn, table, [first], named=True)})"
        )
        arrays = {name: list(col) for name, col in zip(names, zip(*rows, strict=True), strict=True)}
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            cursor.execute(sql, arrays)
        return
    stmt = (
        update(table)
        .where(*[table.c[k] == bindparam("k_" + k) for k in keys])
        .values({c: bindparam("v_" + c) for c in columns})
    )
    params = ["k_" + k for k in keys] + ["v_" + c for c in columns]
    conn.execute(stmt, [dict(zip(params, r, strict=True)) for r in rows])


def _pg_arrays(conn: Any, table: Table, names: Sequence[str], *, named: bool = False) -> str:
    # Binary parameters (`%b`): psycopg dumps a list as text one element at a time, quoting
    # each through a regular expression; in binary a thousand UUIDs or timestamps cost a few
    # milliseconds instead of tens. `named`: `%(column)b`, one parameter however often used.
    return ", ".join(
        f"%{f'({n})' if named else ''}b::{table.c[n].type.compile(dialect=conn.dialect)}[]"
        for n in names
    )


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


def insert_ignore_pg(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> int | None:
    """`kit.db.insert_ignore` as one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`
    on PostgreSQL (one statement text whatever the number of rows, in their order); returns
    how many went in, or None on another database, for the caller to fall back. For tables
    of scalar columns (an array of JSON values is not a JSON column's value)."""
    if not rows:
        return 0
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return None
    session.flush()
    names = list(rows[0])
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT * FROM unnest({_pg_arrays(conn, table, names)}) "
        "ON CONFLICT DO NOTHING RETURNING 1"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        cursor.execute(sql, [[r[n] for r in rows] for n in names])
        return len(cursor.fetchall())
