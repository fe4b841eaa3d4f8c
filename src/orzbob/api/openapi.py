"""The published OpenAPI document, told truthfully: every operation lists the error answers
it can give, each with the real error body (`api.errors`), not FastAPI's default 422 schema.

Which errors an operation gives follows from how it is built: a bearer token means 401, 403
(the wrong kind of token or role) and 422 (a NUL in any text is refused once the caller is
known); a body means 413 and 422; a path id means 404. Anything more particular (409 on a
state change, 502/503 from Polar) is declared on the route with `responses=errors(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = "Error"
ERROR_BODY: dict[str, Any] = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "A stable machine-readable code."},
        "detail": {"type": "string", "description": "What went wrong and what to do."},
        "fields": {
            "type": "array",
            "description": "Per-field problems of an invalid request (422).",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "retry_at": {
            "type": ["string", "null"],
            "description": "When a cap lifts by itself (409 from a cap); null if only an action "
            "lifts it.",
        },
    },
    # Some errors carry more context (e.g. the request id); clients ignore what they do not use.
    "additionalProperties": True,
}

DESCRIPTIONS = {
    400: "The request cannot be read",
    401: "A valid API token is required",
    403: "This token's organization or role may not do this",
    404: "Not found (or not visible to this token)",
    409: "The current state does not allow this",
    413: "The request body is too large",
    422: "The request is invalid; `fields` says where",
    502: "The payment provider refused the request",
    503: "A dependency is unavailable or not configured",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these error codes, rendered with the error body."""
    return {code: {"description": DESCRIPTIONS[code]} for code in codes}


def _implied(op: dict[str, Any]) -> set[int]:
    codes: set[int] = set()
    if op.get("security"):
        codes |= {401, 403, 422}
    if "requestBody" in op:
        codes |= {413} if op.get("x-raw-body") else {413, 422}
    if any(p.get("in") == "path" for p in op.get("parameters", [])):
        codes.add(404)
    if any(p.get("in") in ("query", "path") for p in op.get("parameters", [])):
        codes.add(422)
    return codes


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    for path_item in doc.get("paths", {}).values():
        for op in path_item.values():
            responses: dict[str, Any] = op.setdefault("responses", {})
            codes = _implied(op) | {int(c) for c in responses if c.isdigit() and int(c) >= 400}
            for code in sorted(codes):
                given = responses.get(str(code), {})
                description = given.get("description") or DESCRIPTIONS[code]
                if code == 422 and description == "Validation Error":
                    description = DESCRIPTIONS[422]
                responses[str(code)] = {
                    "description": description,
                    "content": {"application/json": {"schema": ref}},
                }
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas[ERROR_SCHEMA] = ERROR_BODY
    return doc


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
