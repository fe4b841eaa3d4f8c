"""Fault injection and request recording, as a raw ASGI middleware in front of `/v1`.

Rules fire either for the next N matching calls (`count`), with a probability (`rate`, with an
optional `seed` for a reproducible sequence), or on every matching call (neither given).
Latency rules add delay and let the call continue; the other kinds answer in its place.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["latency", "status", "drop"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Recorder = Callable[[str, str, str, int | None, str | None, bytes], None]


class DroppedConnection(Exception):
    """Raised when the server cannot reach the socket to drop it (not running under uvicorn)."""


@dataclass
class FaultRule:
    id: int
    kind: FaultKind
    status: int | None = None
    retry_after: int | None = None
    latency_ms: int = 0
    path_prefix: str = "/v1/"
    method: str | None = None
    count: int | None = None
    rate: float | None = None
    seed: int | None = None
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix)

    def fires(self) -> bool:
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        elif self.rate is not None and self._rng.random() >= self.rate:
            return False
        self.fired += 1
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "remaining": self.count,
            "rate": self.rate,
            "seed": self.seed,
            "fired": self.fired,
        }


@dataclass
class Decision:
    latency_ms: int = 0
    terminal: FaultRule | None = None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(self, **spec: Any) -> FaultRule:
        with self._lock:
            rule = FaultRule(id=next(self._ids), **spec)
            self._rules.append(rule)
            return rule

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._rules]

    def decide(self, method: str, path: str) -> Decision:
        decision = Decision()
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path) or not rule.fires():
                    continue
                if rule.kind == "latency":
                    decision.latency_ms += rule.latency_ms
                    continue
                decision.terminal = rule
                break
        return decision


class FaultMiddleware:
    """Applies faults to `/v1` calls and hands every call to `recorder` for inspection."""

    def __init__(
        self, app: ASGIApp, *, faults: FaultInjector, recorder: Recorder | None = None
    ) -> None:
        self.app = app
        self.faults = faults
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        decision = self.faults.decide(method, path)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        chunks: list[bytes] = []
        recorded = False
        rule = decision.terminal
        fault = None if rule is None else (f"status:{rule.status}" if rule.status else rule.kind)

        async def record(status: int | None) -> None:
            # Written before the response (or the dropped socket) reaches the client, so a
            # client that inspects `/_control/requests` right after a call always finds it.
            nonlocal recorded
            if recorded or self.recorder is None:
                return
            recorded = True
            query = scope.get("query_string", b"").decode("latin-1")
            await asyncio.to_thread(
                self.recorder, method, path, query, status, fault, b"".join(chunks)
            )

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await record(message["status"])
            await send(message)

        try:
            if rule is None:
                await self.app(scope, recording_receive, recording_send)
            else:
                await _drain(recording_receive)
                if rule.kind == "drop":
                    await record(None)
                    await _drop_connection(receive)
                else:
                    await _send_status(recording_send, rule)
        finally:
            await record(None)  # the app failed before answering


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _send_status(send: Send, rule: FaultRule) -> None:
    status = rule.status or 500
    headers = [(b"content-type", b"application/json")]
    if status == 429:
        # Polar answers 429 with an empty body and integer seconds in Retry-After.
        body = b""
        headers = [(b"retry-after", str(rule.retry_after or 1).encode())]
    else:
        body = b'{"error":"InjectedFault","detail":"Fault injected by the local Polar server"}'
        if rule.retry_after is not None:
            headers.append((b"retry-after", str(rule.retry_after).encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(receive: Receive) -> None:
    """Close the socket without writing a byte, so the client sees a protocol error.

    ASGI has no message for this. uvicorn's `receive` is a bound method of its per-request
    cycle, which holds the transport; closing it and marking the cycle disconnected makes
    uvicorn skip its fallback 500 response.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise DroppedConnection("cannot reach the connection to drop it")
    if hasattr(transport, "abort"):
        transport.abort()
    else:
        transport.close()
    cycle.disconnected = True  # type: ignore[union-attr]
    await asyncio.sleep(0)
