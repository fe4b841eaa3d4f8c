from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orzbob.kit import metrics
from orzbob.kit.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _reject(send, self.max_bytes)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


def _message(limit: int) -> str:
    return f"The request body is larger than {limit} bytes."


async def _reject(send: Send, limit: int) -> None:
    import json

    body = json.dumps({"error": "payload_too_large", "detail": _message(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


_PARAM = re.compile(r"\{[^}]+\}")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    return state.get("request_id") if isinstance(state, dict) else None


class RequestIdMiddleware:
    """Every response carries `X-Request-ID` (the caller's, when it is sane, or a new one), so a
    customer's error message and the server log can be matched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class MetricsMiddleware:
    """Counts requests by route template (never the raw path, which holds ids) and status
    class, so the series stay few whatever the traffic."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            # Parameters read `{id}` whatever their name: a label never even names an org.
            template = getattr(scope.get("route"), "path", None)
            route = _PARAM.sub("{id}", template) if template else "unmatched"
            metrics.http_requests_total.labels(
                method=scope.get("method", "GET"), route=route, status=f"{status // 100}xx"
            ).inc()
            metrics.http_request_duration_seconds.labels(route=route).observe(
                time.perf_counter() - started
            )
