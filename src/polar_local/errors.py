"""Error bodies shaped like Polar's, and the handlers that render them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

Loc = Sequence[str | int]

ORGANIZATION_TOKEN_MSG = "Setting organization_id is disallowed when using an organization token."


class ApiError(Exception):
    """A domain refusal rendered as `{"error": <name>, "detail": <message>}`."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}


class NotFound(ApiError):
    def __init__(self) -> None:
        super().__init__(404, "ResourceNotFound", "Not found")


class Unauthorized(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401, "Unauthorized", "Unauthorized", {"WWW-Authenticate": 'Bearer realm="polar"'}
        )


class ControlDisabled(ApiError):
    """`/_control` resets data and injects faults without authentication, so a server that was
    not started for development or tests refuses it."""

    def __init__(self) -> None:
        super().__init__(
            403,
            "ControlDisabled",
            "The control API is only available on a server started for development or tests "
            "(create_app(..., control_api=True)).",
        )


class InvalidToken(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "invalid_token",
            "The access token provided is expired, revoked, malformed, or invalid for other "
            "reasons.",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    def body(self) -> dict[str, Any]:
        # authlib's shape: OAuth-style keys, no `detail`.
        return {"error": self.error, "error_description": self.detail}


class ValidationFailed(ApiError):
    """A 422 carrying one entry per problem, as pydantic/FastAPI would render it."""

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__(422, "PolarRequestValidationError", "validation failed")
        self.issues = issues

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.issues}


def issue(loc: Loc, msg: str, type_: str = "value_error", input_: Any = None) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": type_, "input": input_}


def invalid(loc: Loc, msg: str, type_: str = "value_error", input_: Any = None) -> ValidationFailed:
    return ValidationFailed([issue(loc, msg, type_, input_)])


def organization_token_issue(loc: Loc, value: Any) -> dict[str, Any]:
    return issue(loc, ORGANIZATION_TOKEN_MSG, "organization_token", value)


def pydantic_issues(errors: Sequence[Any], prefix: Loc = ()) -> list[dict[str, Any]]:
    """Turn pydantic error dicts into JSON-safe Polar detail entries under `prefix`."""
    result = []
    for err in errors:
        entry: dict[str, Any] = {
            "loc": [*prefix, *err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", "value_error"),
            "input": _json_safe(err.get("input")),
        }
        if err.get("ctx"):
            entry["ctx"] = {k: _json_safe(v) for k, v in err["ctx"].items()}
        result.append(entry)
    return result


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        body = {"error": "RequestValidationError", "detail": pydantic_issues(exc.errors())}
        return JSONResponse(body, status_code=422)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
