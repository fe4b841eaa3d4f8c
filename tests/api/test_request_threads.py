"""Requests never hold more connections at once than the pool keeps: the API runs as many
request threads as that, so a burst of requests waits for warm connections instead of
opening (and closing again) connections the pool would not keep."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


def test_a_burst_of_reads_stays_within_the_pool(
    app: FastAPI, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    orgs = [make_org(name=f"Org {i}") for i in range(4)]
    pool = runtime.engine.pool
    keeps = pool.size()  # type: ignore[attr-defined]
    lock = threading.Lock()
    held, seen = [0], {"most": 0, "opened": 0}

    def checkout(*_: Any) -> None:
        with lock:
            held[0] += 1
            seen["most"] = max(seen["most"], held[0])
        time.sleep(0.02)  # each request holds its connection a while, so the burst overlaps

    def checkin(*_: Any) -> None:
        with lock:
            held[0] -= 1

    def opened(*_: Any) -> None:
        seen["opened"] += 1

    async def burst(client: httpx.AsyncClient, n: int) -> None:
        answers = await asyncio.gather(
            *(client.get("/v1/billing", headers=orgs[i % 4].headers) for i in range(n))
        )
        assert {r.status_code for r in answers} == {200}, [r.text for r in answers][:2]

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://api") as c,
        ):
            # The pool holds every connection it keeps: on a busy machine a burst alone may
            # not open them all, and one opened later would still be within the pool.
            warm = [runtime.engine.connect() for _ in range(keeps)]
            for conn in warm:
                conn.close()
            event.listen(runtime.engine, "checkout", checkout)
            event.listen(runtime.engine, "checkin", checkin)
            try:
                await burst(c, 2 * keeps)
                event.listen(runtime.engine, "connect", opened)
                await burst(c, 3 * keeps)
            finally:
                event.remove(runtime.engine, "checkout", checkout)
                event.remove(runtime.engine, "checkin", checkin)
                if event.contains(runtime.engine, "connect", opened):
                    event.remove(runtime.engine, "connect", opened)

    asyncio.run(run())
    assert 1 < seen["most"] <= keeps, seen
    assert seen["opened"] == 0, seen
