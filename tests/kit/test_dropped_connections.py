"""A connection the database dropped (a restart, pg_terminate_backend, a failover) costs no
request a 500: the pool notices it at checkout and replaces it (PostgreSQL only)."""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.polar_local.polar_local_support import wait_for


def cut_connections(db_url: str) -> int:
    """pg_terminate_backend on every connection to the database, and wait until they are
    gone: the cut happened before the next request (a cut in the middle of one is a lost
    request whatever the pool does)."""
    url = make_url(db_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.database,),
            )
        ]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: (
                not conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
                ).fetchall()
            )
        )
    return len(pids)


def test_every_request_after_a_cut_succeeds(
    is_postgres: bool,
    runtime: Runtime,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
) -> None:
    if not is_postgres:
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    org = make_org()
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    assert r.status_code == 201, r.text
    beat = f"/v1/instances/{r.json()['id']}/heartbeat"
    for _ in range(2):
        for cut in (False, True):
            if cut:
                assert cut_connections(runtime.settings.database_url) >= 1
            # Every pooled connection is dead now: each of these meets one of them first.
            for _ in range(3):
                assert client.get("/v1/billing", headers=org.headers).status_code == 200
                r = client.post(beat, headers=org.headers, json={"active": True})
                assert r.status_code == 200, r.text
                assert client.get("/v1/instances", headers=org.headers).status_code == 200
                assert client.get("/readyz").status_code == 200


def test_a_live_connection_past_descriptor_1024_is_not_taken_for_dropped(
    is_postgres: bool, runtime: Runtime
) -> None:
    """A busy process has more than 1,024 descriptors open; the checkout check must still
    see its connections as alive (select() cannot watch such a descriptor at all)."""
    if not is_postgres:
        pytest.skip("the checkout check is for PostgreSQL connections")
    from orzbob.kit.db import _dropped

    url = make_url(runtime.settings.database_url).set(drivername="postgresql")
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
            assert conn.fileno() > 1024
            assert not _dropped(conn)
    finally:
        for fd in spare:
            os.close(fd)
