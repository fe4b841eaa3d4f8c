"""Helpers for the local Polar server tests: a running server with an SDK client, a webhook
receiver, and polling without timed assertions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from polar.v2026_10 import Polar

from polar_local import create_app, run_in_thread

TOKEN = "polar_oat_local_test_token"
T = TypeVar("T")


@dataclass
class LocalPolar:
    url: str
    polar: Polar
    http: httpx.Client
    app: FastAPI

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/_control{path}", **kwargs)
        assert response.is_success, response.text
        return response.json() if response.content else None


@contextmanager
def local_polar(db_path: Path, **options: Any) -> Iterator[LocalPolar]:
    app = create_app(db_path, control_api=True, **options)
    with ExitStack() as stack:
        url = stack.enter_context(run_in_thread(app))
        polar = stack.enter_context(Polar(TOKEN, base_url=url))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        yield LocalPolar(url=url, polar=polar, http=http, app=app)


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll until `probe` returns something truthy; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached while polling")
        time.sleep(0.01)


@dataclass
class Receiver:
    """A webhook endpoint that answers `statuses` in turn (then 200) and records every call."""

    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.calls.append((dict(request.headers), body))
                status = self.statuses.pop(0) if self.statuses else 200
            return Response(status_code=status)

        return app

    def snapshot(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.calls)


@contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[tuple[Receiver, str]]:
    rec = Receiver(statuses=list(statuses or []))
    with run_in_thread(rec.app()) as url:
        yield rec, f"{url}/hook"


def make_catalog(lp: LocalPolar) -> tuple[str, str]:
    """A `minutes` meter and a monthly product with a fixed and a metered price."""
    meter = lp.polar.meters.create(
        name="Instance minutes",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "instance.minutes"}],
        },
        aggregation={"func": "sum", "property": "minutes"},
    )
    product = lp.polar.products.create(
        name="Pro plan",
        recurring_interval="month",
        prices=[
            {"amount_type": "fixed", "price_amount": 2000},
            {"amount_type": "metered_unit", "meter_id": meter.id, "unit_amount": "0.05"},
        ],
        metadata={"plan": "pro"},
    )
    return meter.id, product.id
