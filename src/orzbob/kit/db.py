"""Database plumbing: engine, sessions, portable column types and idempotent inserts."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection as DriverConnection
from psycopg import RawCursor
from psycopg.rows import dict_row
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    MetaData,
    Table,
    and_,
    any_,
    bindparam,
    column,
    create_engine,
    event,
    func,
    text,
    tuple_,
)
from sqlalchemy import select as sql_select  # `select` here is the standard library's
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import TypeDecorator

from orzbob.kit.bulk import upsert_add_pg

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


READ_ONLY = "orzbob_read_only"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite keeps no offset, so values are normalised to UTC on the way in and tagged UTC on the
    way out; PostgreSQL stores `timestamptz`. Naive datetimes are a programming error.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "postgresql":
            return super().result_processor(dialect, coltype)

        # Our PostgreSQL sessions run in UTC (`make_engine`), so psycopg already tags each
        # value with `datetime.UTC`: passing it through is one test instead of a conversion
        # (a server whose zone is 'Etc/UTC' gave a ZoneInfo to convert from, a measurable
        # share of every hot read). A session moved off UTC still gets converted values.
        def process(value: datetime | None) -> datetime | None:
            if value is None or value.tzinfo is UTC:
                return value
            return value.astimezone(UTC)

        return process


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


# Connections each engine's pool keeps, by dialect; the API runs as many request threads
# (`api.app`), and a pool lends up to MAX_OVERFLOW more (the jobs thread, a CLI command).
POOL_SIZE = {"sqlite": 8, "postgresql": 20}
MAX_OVERFLOW = 8


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and write-intent transactions."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE["sqlite"],
            max_overflow=MAX_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling starts DEFERRED transactions lazily; two
            # writers that both read first then deadlock on the upgrade to a write lock.
            # Taking over BEGIN lets every transaction start IMMEDIATE (one writer at a time).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # SQLite has one writer at a time; when threads of this process contend, SQLite's busy
        # handler sleeps in growing steps (up to 100 ms). Queueing them on a lock instead
        # hands the write lock over at once. Other processes still meet busy_timeout.
        writer = threading.Lock()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                # A reader under WAL sees a snapshot and blocks nobody: no write lock.
                conn.exec_driver_sql("BEGIN")
                return
            if writer.acquire(timeout=30):
                conn.info["orzbob_writer"] = True
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        def _release(conn: Any) -> None:
            if conn.info.pop("orzbob_writer", False):
                writer.release()

        event.listen(engine, "commit", _release)
        event.listen(engine, "rollback", _release)
        return engine
    # A connection the server dropped (a restart, pg_terminate_backend, a failover) must be
    # replaced before use instead of failing a request with a 500. Pool pre-ping would ask
    # with a round trip on every checkout; `_dropped` asks the socket instead (see there).
    # Recycling keeps idle connections younger than most proxies' idle timeouts.
    # Every session in UTC, whatever the server's default (see `UTCDateTime`): added to any
    # `options` the URL carries (connect_args would replace them).
    given = make_url(url).query.get("options")
    options = " ".join([*([given] if isinstance(given, str) else given or []), "-c TimeZone=UTC"])
    engine = create_engine(
        url,
        echo=echo,
        pool_pre_ping=False,
        pool_recycle=300,
        pool_size=POOL_SIZE["postgresql"],
        max_overflow=MAX_OVERFLOW,
        connect_args={"options": options},
    )
    event.listen(engine, "connect", _binary_arrays)
    event.listen(engine, "checkout", _refuse_dropped)

    event.listen(engine, "checkin", _end_autocommit)
    return engine


def _dropped(dbapi_conn: Any) -> bool:
    """Whether an idle pooled psycopg connection is gone, without a round trip.

    A server that ends a connection says so (an error message, then the socket closes), so
    an idle connection whose socket has anything to read, or has failed, is dead; nothing
    else is ever sent to an idle connection of ours (no LISTEN). A link lost without a word
    (a silent proxy) is left to `pool_recycle`, as pre-ping would have hung on it anyway."""
    if dbapi_conn.closed or dbapi_conn.broken:
        return True
    # poll, not select: select refuses descriptors past FD_SETSIZE (1024), which a busy
    # process reaches, and every checkout would then look dropped.
    poller = select.poll()
    try:
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _binary_arrays(dbapi_conn: Any, _record: Any) -> None:
    """List parameters (`one_of`, `pairs_in`: the ids of a batch) go in binary. psycopg's
    default for a list is text, which runs a regular expression over every element to
    decide its quoting: thousands of ids per statement on the checkpoint's path."""
    from psycopg.types.array import ListBinaryDumper

    dbapi_conn.adapters.register_dumper(list, ListBinaryDumper)


def _refuse_dropped(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    # DisconnectionError at checkout: the pool discards the connection and checks out
    # another (a new one, after a cut), up to three times.
    if _dropped(dbapi_conn):
        raise DisconnectionError("the database closed this pooled connection")


def _end_autocommit(dbapi_conn: Any, _record: Any) -> None:
    # A reader's connection goes back to the pool as it came: in transactions.
    if dbapi_conn is not None and not dbapi_conn.closed and dbapi_conn.autocommit:
        dbapi_conn.autocommit = False


def _begin_autocommit(_session: Session, _transaction: Any, connection: Any) -> None:
    connection.connection.dbapi_connection.autocommit = True


def make_sessionmaker(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `read_only` ones must not write (on SQLite they take no write
    lock, so readers never queue behind writers).

    On PostgreSQL a reader runs without BEGIN and COMMIT: under READ COMMITTED every
    statement sees its own snapshot, in a transaction or not, so they bought nothing but two
    round trips per read. psycopg's autocommit is a client-side switch, set when the reader
    takes its connection and cleared when the pool takes it back (`_end_autocommit`)."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    factory = sessionmaker(bind=bind, expire_on_commit=False, autoflush=True)
    if read_only and engine.dialect.name == "postgresql":
        event.listen(factory, "after_begin", _begin_autocommit)
    return factory


class StatementConnection:
    """A pooled PostgreSQL connection on which each statement commits as it runs
    (`statement_connection`). Its statements go to psycopg as they are: SQLAlchemy's
    execution around one (its connection, execution context, result and row objects) cost a
    heartbeat about as many instructions as psycopg's own work. So they are not seen by the
    engine's execution events; a driver error is raised as SQLAlchemy raises it."""

    def __init__(self, engine: Engine, pooled: PoolProxiedConnection) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.pooled = pooled
        self.driver: DriverConnection[Any] = pooled.driver_connection  # type: ignore[assignment]

    def first_row(self, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row `sql` gives, by column name, or None: the driver's SQL with its
        parameters, as `Connection.exec_driver_sql` would take them."""
        query, names = _native(sql)
        cursor = RawCursor(self.driver, row_factory=dict_row)
        try:
            cursor.execute(query, [params[n] for n in names])
            row: dict[str, Any] | None = cursor.fetchone()
            return row
        except self.dialect.loaded_dbapi.Error as err:
            raise self._failed(err, cursor, sql, params) from err
        finally:
            cursor.close()

    def rows(self, stmt: ClauseElement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of a SELECT built once at import (compiled on first use, `_driver_sql`),
        as plain tuples. Values come as psycopg gives them, with no type's result processing:
        right for UUIDs, numbers, text and dates, and for `UTCDateTime` (the session's time
        zone is UTC, `make_engine`, so timestamps come tagged `datetime.UTC`); not for a
        column whose type converts its values (JSON, an enum), which `tests/kit/test_db.py`
        would show by comparing with the session's rows."""
        sql, literals = _driver_sql(self.dialect, stmt)
        query, names = _native(sql)
        values = {**literals, **params}
        cursor = RawCursor(self.driver)
        try:
            cursor.execute(query, [values[n] for n in names])
            return cursor.fetchall()
        except self.dialect.loaded_dbapi.Error as err:
            raise self._failed(err, cursor, sql, params) from err
        finally:
            cursor.close()

    def _failed(self, err: Any, cursor: Any, sql: str, params: dict[str, Any]) -> StatementError:
        # As through a `Connection`: a connection the server dropped leaves the pool.
        lost = self.dialect.is_disconnect(err, self.pooled.dbapi_connection, cursor)
        if lost:
            self.pooled.invalidate(err)
        return _wrapped(self.engine, err, sql, params, lost)


@functools.lru_cache(maxsize=64)
def _driver_sql(dialect: Dialect, stmt: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A statement as the driver's SQL, with the values of its literals. SQLAlchemy derives a
    cache key from the whole statement on every execution, which for a statement of several
    subqueries costs more than running it. Keyed by the statement object: for statements
    built once at import, never for one built per call."""
    compiled = stmt.compile(dialect=dialect)
    return compiled.string, dict(compiled.params)


_PYFORMAT = re.compile(r"%%|%\((\w+)\)s")


@functools.lru_cache(maxsize=64)
def _native(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """The driver's SQL (psycopg's `%(name)s` placeholders, `%%` for a percent sign, as
    SQLAlchemy compiles it) with PostgreSQL's own `$n` placeholders instead, and the names in
    their order, for a `RawCursor`, which sends a query as it is. psycopg parses a query's
    placeholders on every execution unless it is at most 4 KB long: the one-statement
    heartbeat is 5 KB, and its parse cost a fifth of a beat's Python."""
    order: dict[str, int] = {}

    def native(m: re.Match[str]) -> str:
        name = m.group(1)
        return "%" if name is None else f"${order.setdefault(name, len(order) + 1)}"

    return _PYFORMAT.sub(native, sql).encode(), tuple(order)


# Where a read model's statements run: the request's session, or on PostgreSQL a
# `statement_connection` (the driver's SQL compiled once, no SQLAlchemy execution around
# each statement).
Reader = Session | StatementConnection


def _wrapped(
    engine: Engine, err: Exception, sql: str | None, params: dict[str, Any] | None, lost: bool
) -> StatementError:
    return DBAPIError.instance(
        sql,
        params,
        err,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=lost,
        dialect=engine.dialect,
    )


@contextmanager
def statement_connection(engine: Engine) -> Iterator[StatementConnection]:
    """A pooled PostgreSQL connection on which each statement commits as it runs, for work
    that is one statement (atomic on its own): no BEGIN or COMMIT round trip, and none of a
    session's unit of work around it. Back in the pool it is as it was (`_end_autocommit`)."""
    try:
        pooled = engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as err:
        lost = engine.dialect.is_disconnect(err, None, None)
        raise _wrapped(engine, err, None, None, lost) from err
    try:
        pooled.driver_connection.autocommit = True  # type: ignore[union-attr]
        yield StatementConnection(engine, pooled)
    finally:
        pooled.close()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows, skipping those that violate a unique constraint; returns how many went in."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported database dialect {dialect}")
    # Count what RETURNING gives back: psycopg reports rowcount -1 for these inserts. The rows
    # go as parameters of one cached statement (batched into multi-row inserts by the
    # driver layer), never compiled into a new statement per call.
    key = next(iter(table.primary_key.columns))
    return len(session.execute(stmt.returning(key), list(rows)).all())


def upsert_add(
    session: Session, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert rows, or add their non-key values to the existing row with the same key.

    One batch for all the rows, in their order; `rows` must not repeat a key (PostgreSQL refuses to
    touch a row twice in one statement).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        upsert_add_pg(session, table, keys, rows)
        return
    module: Any = sqlite
    stmt = module.insert(table)
    adds = {col: table.c[col] + stmt.excluded[col] for col in rows[0] if col not in set(keys)}
    # One cached statement executed over the rows (a driver-level batch), not a VALUES list
    # compiled afresh on every call.
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=adds), list(rows))


@contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Hold the PostgreSQL advisory lock `name` while the block runs, on a connection of its
    own; yields False at once if another process holds it. The lock dies with its
    connection, so a crashed holder never blocks the others. On SQLite (one writer, one
    job-running process) it always yields True."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


_AFTER_COMMIT = "orzbob_after_commit"


def on_commit(session: Session, fn: Callable[[], object]) -> None:
    """Run `fn` once the session's current transaction has committed (never on rollback):
    counters of things that happened must not count what was rolled back."""
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for fn in session.info.pop(_AFTER_COMMIT, []):
        fn()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


@contextmanager
def planned_for_values(session: Session) -> Iterator[None]:
    """Statements run inside are planned for their own parameter values on PostgreSQL: sent
    unprepared (psycopg prepares a statement run five times, and PostgreSQL then soon
    settles on a generic plan, which cannot see, for one, how few values an `= ANY(array)`
    holds). A client-side setting, put back after: no statement of its own."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        yield
        return
    driver: Any = conn.connection.driver_connection
    threshold = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = threshold


def dialect_name(session: Session) -> str:
    return session.get_bind().dialect.name


def one_of(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter however
    many values: a thousand-value IN list costs more to render and parse than to run."""
    values = list(values)
    if dialect_name(session) == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def pairs_in(session: Session, columns: tuple[Any, Any], pairs: Iterable[tuple[Any, Any]]) -> Any:
    """`(a, b) IN (pairs)`; on PostgreSQL `a = ANY(:a_array) AND (a, b) IN (SELECT * FROM
    unnest(:a_array, :b_array))`: array parameters however many pairs, so the statement's
    text is the same on every call (psycopg parses it once, PostgreSQL plans it as a
    prepared statement) instead of a tuple list of a thousand placeholders. The `= ANY` is
    the index condition: a semi-join with the unnest alone reads the whole table."""
    a, b = columns
    pairs = list(pairs)
    if dialect_name(session) != "postgresql":
        return tuple_(a, b).in_(pairs)
    firsts = [p[0] for p in pairs]
    keys = func.unnest(
        bindparam(None, firsts, type_=postgresql.ARRAY(a.type)),
        bindparam(None, [p[1] for p in pairs], type_=postgresql.ARRAY(b.type)),
    )
    derived = keys.table_valued(column("a", a.type), column("b", b.type)).render_derived()
    return and_(
        a == any_(bindparam(None, firsts, type_=postgresql.ARRAY(a.type))),
        tuple_(a, b).in_(sql_select(derived.c.a, derived.c.b)),
    )


_V7_LOCK = threading.Lock()
_v7_last_ms = 0
_V7_VARIANT_CLEAR = ~(0xC000 << 48)
_V7_VARIANT = 0x8000 << 48
_V7_VERSION = 7 << 76
_V7_RANDOM = (1 << 76) - 1


def new_id() -> uuid.UUID:
    """Time-ordered UUIDv7: keeps inserts into high-volume tables append-only."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[uuid.UUID]:
    """`n` UUIDv7s in ascending order, each later than any given before in this process.

    As the uuid6 package does: the millisecond field is the clock's, or one more than the
    last one given when the clock has not moved on (so ids stay strictly increasing), and
    74 random bits. Made in one go for a batch, at a small part of the per-id cost."""
    global _v7_last_ms
    if n <= 0:
        return []
    with _V7_LOCK:
        first = max(time.time_ns() // 1_000_000, _v7_last_ms + 1)
        _v7_last_ms = first + n - 1
    noise = os.urandom(10 * n)
    from_bytes = int.from_bytes
    UUID = uuid.UUID
    return [
        UUID(
            int=(
                ((first + i) & 0xFFFFFFFFFFFF) << 80
                | _V7_VERSION
                | from_bytes(noise[10 * i : 10 * i + 10]) & _V7_RANDOM
            )
            & _V7_VARIANT_CLEAR
            | _V7_VARIANT
        )
        for i in range(n)
    ]
