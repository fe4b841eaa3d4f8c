import time
import uuid
from datetime import UTC, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, literal, select, text

from orzbob.kit.db import (
    advisory_lock,
    insert_ignore,
    new_id,
    new_ids,
    on_commit,
    statement_connection,
)
from orzbob.runtime import Runtime
from orzbob.testclock import models as clock_models
from tests.conftest import T0


def test_insert_ignore_reports_how_many_went_in(runtime: Runtime) -> None:
    table = clock_models.TestClockState.__table__
    with runtime.session() as s:
        assert insert_ignore(s, table, [{"id": 1, "now": T0}, {"id": 2, "now": T0}]) == 2  # type: ignore[arg-type]
        assert insert_ignore(s, table, [{"id": 2, "now": T0}, {"id": 3, "now": T0}]) == 1  # type: ignore[arg-type]
        assert s.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 3


def test_an_advisory_lock_lets_one_holder_run_a_job(runtime: Runtime, is_postgres: bool) -> None:
    with advisory_lock(runtime.engine, "orzbob.test.job") as first:
        assert first
        with advisory_lock(runtime.engine, "orzbob.test.job") as second:
            # Another connection (another process) is refused; SQLite has one job process.
            assert second is (not is_postgres)
        with advisory_lock(runtime.engine, "orzbob.test.other") as other:
            assert other
    with advisory_lock(runtime.engine, "orzbob.test.job") as again:
        assert again


def test_on_commit_runs_after_a_commit_and_never_after_a_rollback(runtime: Runtime) -> None:
    calls: list[str] = []
    with runtime.session() as s:
        on_commit(s, lambda: calls.append("committed"))
        assert calls == []
    assert calls == ["committed"]
    with pytest.raises(RuntimeError), runtime.session() as s:
        on_commit(s, lambda: calls.append("rolled back"))
        raise RuntimeError("boom")
    with runtime.session():
        pass
    assert calls == ["committed"]


def test_a_reader_sends_no_begin_and_hands_its_connection_back_transactional(
    runtime: Runtime, is_postgres: bool
) -> None:
    with runtime.read_session() as s:
        assert s.execute(text("SELECT 1")).scalar() == 1
        dbapi = s.connection().connection.dbapi_connection
        if is_postgres:
            import psycopg

            # Autocommit: the SELECT ran without a BEGIN, and no COMMIT will follow.
            assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]
    if is_postgres:
        # Back in the pool, the connection starts transactions again for a writer.
        assert dbapi.autocommit is False  # type: ignore[union-attr]
    # A writer that fails still loses its write, whichever pooled connection it gets.
    with pytest.raises(RuntimeError), runtime.session() as w:
        insert_ignore(w, clock_models.TestClockState.__table__, [{"id": 9, "now": T0}])  # type: ignore[arg-type]
        raise RuntimeError("boom")
    with runtime.read_session() as s:
        assert s.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 0


def test_a_statement_connection_commits_each_statement_and_goes_back_transactional(
    runtime: Runtime, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("one-statement connections serve PostgreSQL's hot paths only")
    import psycopg

    with statement_connection(runtime.engine) as conn:
        insert = "INSERT INTO test_clock_state (id, now) VALUES (7, now()) RETURNING id"
        assert conn.first_row(insert, {}) == {"id": 7}
        dbapi = conn.pooled.driver_connection
        # Committed as it ran: no transaction is open, and another connection sees the row.
        assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]
        with runtime.read_session() as other:
            assert other.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 1
    assert dbapi.autocommit is False  # type: ignore[union-attr]
    # A writer that fails on any pooled connection still loses its write.
    for _ in range(3):
        with pytest.raises(RuntimeError), runtime.session() as w:
            w.execute(text("DELETE FROM test_clock_state"))
            raise RuntimeError("boom")
    with runtime.read_session() as s:
        assert s.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 1


def test_a_statement_connections_driver_error_is_sqlalchemys_and_its_connection_goes_on(
    runtime: Runtime, is_postgres: bool
) -> None:
    """Its statements go to psycopg past SQLAlchemy, but fail as through the engine: the
    error SQLAlchemy would raise (so the API's handlers and logs see the same), the driver's
    error underneath, and a connection still fit for the pool."""
    if not is_postgres:
        pytest.skip("one-statement connections serve PostgreSQL's hot paths only")
    import psycopg
    from sqlalchemy.exc import DataError

    with pytest.raises(DataError) as failed, statement_connection(runtime.engine) as conn:
        conn.first_row("SELECT 1 / %(zero)s AS x", {"zero": 0})
    assert isinstance(failed.value.orig, psycopg.errors.DivisionByZero)
    assert failed.value.statement == "SELECT 1 / %(zero)s AS x"
    assert not failed.value.connection_invalidated
    with statement_connection(runtime.engine) as conn:
        assert conn.first_row("SELECT 1 AS x WHERE %(no)s", {"no": False}) is None
        assert conn.first_row("SELECT 2 AS x", {}) == {"x": 2}


_CLOCK = clock_models.TestClockState.__table__
_CLOCK_ROWS = (
    select(_CLOCK.c.id, _CLOCK.c.now, literal("fixed").label("tag"))
    .where(_CLOCK.c.id >= bindparam("least"))
    .order_by(_CLOCK.c.id)
)


def test_a_statement_connections_rows_are_the_sessions_rows(
    runtime: Runtime, is_postgres: bool
) -> None:
    """A statement built once, compiled once to the driver's SQL: the same rows as through
    the session (its literals bound, timestamps in UTC), and a driver error as SQLAlchemy's."""
    if not is_postgres:
        pytest.skip("one-statement connections serve PostgreSQL's hot paths only")
    from sqlalchemy.exc import DataError

    with runtime.session() as w:
        for i, at in enumerate((T0, T0 + timedelta(hours=1)), start=1):
            w.execute(insert(_CLOCK).values(id=i, now=at.astimezone(timezone(timedelta(hours=5)))))
    with runtime.read_session() as s:
        expected = [tuple(r) for r in s.execute(_CLOCK_ROWS, {"least": 2})]
    with statement_connection(runtime.engine) as conn:
        for _ in range(2):  # the second from the compiled cache
            got = conn.rows(_CLOCK_ROWS, {"least": 2})
            assert got == expected == [(2, T0 + timedelta(hours=1), "fixed")]
            assert got[0][1].tzinfo is UTC
        assert conn.rows(_CLOCK_ROWS, {"least": 3}) == []
        with pytest.raises(DataError):
            conn.rows(_CLOCK_ROWS, {"least": "two"})
    with statement_connection(runtime.engine) as conn:  # the connection went back fit
        assert len(conn.rows(_CLOCK_ROWS, {"least": 1})) == 2


def test_a_long_statement_is_parsed_once_not_on_every_run(
    runtime: Runtime, is_postgres: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg caches its parse of a query's placeholders only for queries of up to 4 KB; the
    one-statement heartbeat is longer, and parsing it on every beat cost a fifth of the
    beat's Python. A statement connection sends PostgreSQL's own `$n` placeholders, worked
    out once per statement: a name used twice is one parameter, and `%%` is a percent
    sign."""
    if not is_postgres:
        pytest.skip("one-statement connections serve PostgreSQL's hot paths only")
    from psycopg import _queries

    parsed: list[bytes] = []
    parse = _queries._query2pg_nocache
    monkeypatch.setattr(
        _queries, "_query2pg_nocache", lambda q, enc: parsed.append(q) or parse(q, enc)
    )
    padding = " AND %(x)s = %(x)s" * 300  # past psycopg's cached length
    sql = f"SELECT %(x)s + %(y)s AS s, '5%%' AS pct, %(x)s * 2 AS d WHERE true{padding}"
    assert len(sql) > _queries.MAX_CACHED_STATEMENT_LENGTH
    with statement_connection(runtime.engine) as conn:
        for x in range(3):
            assert conn.first_row(sql, {"x": x, "y": 10}) == {"s": x + 10, "pct": "5%", "d": 2 * x}
        assert conn.rows(_CLOCK_ROWS, {"least": 1}) == []
    assert parsed == []


def test_new_ids_are_uuid7_ascending_after_every_id_given_before() -> None:
    given = [new_id(), *new_ids(500), new_id(), *new_ids(3), new_id()]
    assert given == sorted(given)
    assert len(set(given)) == len(given)
    assert {u.version for u in given} == {7}
    assert {u.variant for u in given} == {uuid.RFC_4122}
    assert new_ids(0) == []
    # The millisecond field: the clock's, moved on by one where ids come faster.
    first_ms = given[0].int >> 80
    assert abs(first_ms - time.time_ns() // 1_000_000) < 60_000


def test_postgresql_sessions_run_in_utc_so_timestamps_arrive_tagged_utc(
    runtime: Runtime, is_postgres: bool
) -> None:
    """Whatever the server's default time zone, an engine's connections are set to UTC, so
    psycopg tags every timestamp with `datetime.UTC` itself and the column type has nothing
    left to convert (one Python call less per timestamp on the hot reads)."""
    if not is_postgres:
        pytest.skip("SQLite keeps no offset: the column type tags each value")
    from datetime import UTC, datetime

    from sqlalchemy import column, select

    from orzbob.kit.db import UTCDateTime

    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
        conn.exec_driver_sql("SET LOCAL TimeZone = 'America/New_York'")
        at = conn.execute(
            select(column("t", UTCDateTime())).select_from(
                text("(SELECT timestamptz '2026-03-01 12:00:00+00' AS t) AS x")
            )
        ).scalar_one()
        # Even a session someone moved off UTC still yields the right instant, tagged UTC.
        assert at == datetime(2026, 3, 1, 12, tzinfo=UTC)
        assert at.tzinfo is UTC
        conn.rollback()
        at = conn.execute(
            select(column("t", UTCDateTime())).select_from(
                text("(SELECT timestamptz '2026-03-01 12:00:00+00' AS t) AS x")
            )
        ).scalar_one()
        assert at.tzinfo is UTC


def test_options_in_the_database_url_are_kept_beside_the_utc_setting(
    runtime: Runtime, is_postgres: bool
) -> None:
    """An operator's `?options=-c …` in DATABASE_URL (a statement timeout, say) reaches the
    server; the engine's own UTC setting is added to it, not put in its place."""
    if not is_postgres:
        pytest.skip("PostgreSQL connection options")
    from sqlalchemy.engine import make_url

    from orzbob.kit.db import make_engine

    url = make_url(runtime.settings.database_url).update_query_dict(
        {"options": "-c statement_timeout=4321 -c lock_timeout=1234"}
    )
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "4321ms"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1234ms"
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
    finally:
        engine.dispose()
