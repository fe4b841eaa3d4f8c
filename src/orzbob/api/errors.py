"""Every error leaves the API as `{"error": ..., "detail": ...}`; never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orzbob.api.deps import authenticate, bearer_of, needs_principal
from orzbob.api.middleware import request_id_of
from orzbob.kit.errors import OrzbobError

log = logging.getLogger(__name__)


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    where = ".".join(loc)
    if err.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    if err.get("type") == "missing":
        return f"{where} is required."
    msg = str(err.get("msg", "is invalid"))
    msg = msg.removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def render(exc: OrzbobError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "detail": exc.detail, **exc.extra},
        status_code=exc.status_code,
        headers=exc.headers,
    )


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _caller_refused(request: Request) -> JSONResponse | None:
    """FastAPI reads the body before it runs dependencies; who is asking comes first, so an
    anonymous malformed body is a 401 like any other anonymous request."""
    route = request.scope.get("route")
    if not needs_principal(route):
        return None
    credentials = await bearer_of(request)
    try:
        await authenticate(request.app.state.runtime, credentials)
    except OrzbobError as refused:
        return render(refused)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrzbobError)
    async def _orzbob(_: Request, exc: OrzbobError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            refused = await _caller_refused(request)
            if refused is not None:
                return refused
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": _describe(e)}
            for e in errors
        ]
        detail = " ".join(f["message"] for f in fields) or "The request is invalid."
        return JSONResponse(
            {"error": "invalid_request", "detail": detail, "fields": fields}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            # A body that is not even text (not UTF-8): the same answer as malformed JSON.
            return await _caller_refused(request) or JSONResponse(
                {
                    "error": "invalid_request",
                    "detail": "The request body is not valid JSON (UTF-8).",
                    "fields": [{"field": "body", "message": "The request body is not valid JSON."}],
                },
                status_code=422,
            )
        names = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return JSONResponse(
            {"error": names.get(exc.status_code, "http_error"), "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # This handler runs outside the request-id middleware: it sets the header itself.
        request_id = request_id_of(request.scope) or "unknown"
        log.exception(
            "unhandled error on %s %s (request id %s)",
            request.method,
            request.url.path,
            request_id,
        )
        return JSONResponse(
            {
                "error": "internal_error",
                "detail": "Something went wrong on our side; nothing was changed. "
                "Please retry, and contact support if it persists.",
                "request_id": request_id,
            },
            status_code=500,
            headers={"X-Request-ID": request_id},
        )
