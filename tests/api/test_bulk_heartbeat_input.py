"""The bulk heartbeats' answers to malformed input are pinned as they were served through
FastAPI's own body parsing and dependency solving: the route now parses its body itself, and
every status, error code, detail and field below must stay as it was."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import OrgHandle

JSON = {"Content-Type": "application/json"}
NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"
BAD_ID = "beats.0.instance_id: Input should be a valid UUID, invalid character: found `x` at 0"
TOO_MANY = "beats: List should have at most 1000 items after validation, not 1001"
TOO_FEW = "beats: List should have at least 1 item after validation, not 0"
PATTERN = "beats.0.source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'"
NOT_A_BOOL = "beats.0.active: Input should be a valid boolean"
ID = "00000000-0000-7000-8000-000000000001"
ONE = b'{"beats": [{"instance_id": "' + ID.encode() + b'", "active": true}]}'
CASES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("truncated json", b'{"beats": [', JSON, "org"),
    ("a list", b"[]", JSON, "org"),
    ("null", b"null", JSON, "org"),
    ("empty object", b"{}", JSON, "org"),
    ("empty body", b"", JSON, "org"),
    ("no beats", b'{"beats": []}', JSON, "org"),
    ("beats not a list", b'{"beats": {}}', JSON, "org"),
    ("too many", b'{"beats": [' + b",".join([ONE[11:-2]] * 1001) + b"]}", JSON, "org"),
    ("bad id", b'{"beats": [{"instance_id": "x", "active": true}]}', JSON, "org"),
    ("missing id", b'{"beats": [{"active": true}]}', JSON, "org"),
    ("active a string", ONE.replace(b"true", b'"yes"'), JSON, "org"),
    ("bad source", ONE.replace(b"true", b'true, "source": "<s>"'), JSON, "org"),
    ("unknown beat field", ONE.replace(b"true", b'true, "x": 1'), JSON, "org"),
    ("unknown field", ONE[:-1] + b', "x": 1}', JSON, "org"),
    ("several errors", b'{"beats": [{"instance_id": "x", "active": 1}, 5]}', JSON, "org"),
    ("not utf-8", ONE.replace(b"true", b'true, "source": "\xff"'), JSON, "org"),
    ("no content type", ONE, {}, "org"),
    ("text/plain", ONE, {"Content-Type": "text/plain"}, "org"),
    ("nul", ONE.replace(b"true", b'true, "source": "a\\u0000"'), JSON, "org"),
    ("anonymous bad json", b"{", JSON, "none"),
    ("anonymous bad types", b'{"beats": 1}', JSON, "none"),
    ("anonymous", ONE, JSON, "none"),
    ("unknown token bad json", b"{", JSON, "unknown"),
    ("unknown token bad types", b'{"beats": 1}', JSON, "unknown"),
    ("staff token", ONE, JSON, "staff"),
    ("staff token bad types", b'{"beats": 1}', JSON, "staff"),
    ("unknown id", ONE, JSON, "org"),
    ("unknown id fleet", ONE, JSON, "fleet"),
    (
        "duplicate keys",
        ONE.replace(b'"active": true', b'"active": false, "active": true'),
        JSON,
        "org",
    ),
    ("charset", ONE, {"Content-Type": "application/json; charset=utf-8"}, "org"),
    ("utf-16", ONE.decode().encode("utf-16"), JSON, "org"),
]
EXPECTED: dict[str, tuple[int, dict[str, Any]]] = {
    "a list": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [{"field": "body", "message": NOT_AN_OBJECT}],
        },
    ),
    "active a string": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_A_BOOL,
            "fields": [{"field": "body.beats.0.active", "message": NOT_A_BOOL}],
        },
    ),
    "anonymous bad json": (
        401,
        {
            "error": "unauthorized",
            "detail": "Send your API token as 'Authorization: Bearer <token>'.",
        },
    ),
    "anonymous bad types": (
        401,
        {
            "error": "unauthorized",
            "detail": "Send your API token as 'Authorization: Bearer <token>'.",
        },
    ),
    "anonymous": (
        401,
        {
            "error": "unauthorized",
            "detail": "Send your API token as 'Authorization: Bearer <token>'.",
        },
    ),
    "bad id": (
        422,
        {
            "error": "invalid_request",
            "detail": BAD_ID,
            "fields": [{"field": "body.beats.0.instance_id", "message": BAD_ID}],
        },
    ),
    "bad source": (
        422,
        {
            "error": "invalid_request",
            "detail": PATTERN,
            "fields": [
                {
                    "field": "body.beats.0.source",
                    "message": PATTERN,
                }
            ],
        },
    ),
    "beats not a list": (
        422,
        {
            "error": "invalid_request",
            "detail": "beats: Input should be a valid list",
            "fields": [{"field": "body.beats", "message": "beats: Input should be a valid list"}],
        },
    ),
    "charset": (
        200,
        {
            "accepted": 0,
            "unknown": 1,
            "stopped": 0,
            "duplicates": 0,
            "unknown_ids": ["00000000-0000-7000-8000-000000000001"],
            "stopped_ids": [],
            "paused": [],
        },
    ),
    "duplicate keys": (
        200,
        {
            "accepted": 0,
            "unknown": 1,
            "stopped": 0,
            "duplicates": 0,
            "unknown_ids": ["00000000-0000-7000-8000-000000000001"],
            "stopped_ids": [],
            "paused": [],
        },
    ),
    "empty body": (
        422,
        {
            "error": "invalid_request",
            "detail": " is required.",
            "fields": [{"field": "body", "message": " is required."}],
        },
    ),
    "empty object": (
        422,
        {
            "error": "invalid_request",
            "detail": "beats is required.",
            "fields": [{"field": "body.beats", "message": "beats is required."}],
        },
    ),
    "missing id": (
        422,
        {
            "error": "invalid_request",
            "detail": "beats.0.instance_id is required.",
            "fields": [
                {"field": "body.beats.0.instance_id", "message": "beats.0.instance_id is required."}
            ],
        },
    ),
    "no beats": (
        422,
        {
            "error": "invalid_request",
            "detail": TOO_FEW,
            "fields": [
                {
                    "field": "body.beats",
                    "message": TOO_FEW,
                }
            ],
        },
    ),
    "no content type": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [{"field": "body", "message": NOT_AN_OBJECT}],
        },
    ),
    "not utf-8": (
        422,
        {
            "error": "invalid_request",
            "detail": "The request body is not valid JSON (UTF-8).",
            "fields": [{"field": "body", "message": "The request body is not valid JSON."}],
        },
    ),
    "nul": (
        422,
        {"error": "invalid_request", "detail": "Text cannot contain a NUL character (\\u0000)."},
    ),
    "null": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [{"field": "body", "message": NOT_AN_OBJECT}],
        },
    ),
    "several errors": (
        422,
        {
            "error": "invalid_request",
            "detail": " ".join((NOT_A_BOOL, BAD_ID, "beats.1: " + NOT_AN_OBJECT)),
            "fields": [
                {"field": "body.beats.0.active", "message": NOT_A_BOOL},
                {"field": "body.beats.0.instance_id", "message": BAD_ID},
                {"field": "body.beats.1", "message": "beats.1: " + NOT_AN_OBJECT},
            ],
        },
    ),
    "staff token bad types": (
        422,
        {
            "error": "invalid_request",
            "detail": "beats: Input should be a valid list",
            "fields": [{"field": "body.beats", "message": "beats: Input should be a valid list"}],
        },
    ),
    "staff token": (
        403,
        {
            "error": "forbidden",
            "detail": "Bulk heartbeats need an organization token or a fleet token.",
        },
    ),
    "text/plain": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [{"field": "body", "message": NOT_AN_OBJECT}],
        },
    ),
    "too many": (
        422,
        {
            "error": "invalid_request",
            "detail": TOO_MANY,
            "fields": [
                {
                    "field": "body.beats",
                    "message": TOO_MANY,
                }
            ],
        },
    ),
    "truncated json": (
        422,
        {
            "error": "invalid_request",
            "detail": "The request body is not valid JSON.",
            "fields": [{"field": "body.11", "message": "The request body is not valid JSON."}],
        },
    ),
    "unknown beat field": (
        422,
        {
            "error": "invalid_request",
            "detail": "beats.0.x: Extra inputs are not permitted",
            "fields": [
                {"field": "body.beats.0.x", "message": "beats.0.x: Extra inputs are not permitted"}
            ],
        },
    ),
    "unknown field": (
        422,
        {
            "error": "invalid_request",
            "detail": "x: Extra inputs are not permitted",
            "fields": [{"field": "body.x", "message": "x: Extra inputs are not permitted"}],
        },
    ),
    "unknown id fleet": (
        200,
        {
            "accepted": 0,
            "unknown": 1,
            "stopped": 0,
            "duplicates": 0,
            "unknown_ids": ["00000000-0000-7000-8000-000000000001"],
            "stopped_ids": [],
            "paused": [],
        },
    ),
    "unknown id": (
        200,
        {
            "accepted": 0,
            "unknown": 1,
            "stopped": 0,
            "duplicates": 0,
            "unknown_ids": ["00000000-0000-7000-8000-000000000001"],
            "stopped_ids": [],
            "paused": [],
        },
    ),
    "unknown token bad json": (
        401,
        {"error": "unauthorized", "detail": "The API token is unknown or has been revoked."},
    ),
    "unknown token bad types": (
        401,
        {"error": "unauthorized", "detail": "The API token is unknown or has been revoked."},
    ),
    "utf-16": (
        422,
        {"error": "invalid_request", "detail": "Text cannot contain a NUL character (\\u0000)."},
    ),
}


@pytest.mark.parametrize(("case", "body", "headers", "token"), CASES, ids=[c[0] for c in CASES])
def test_each_malformed_batch_answers_as_before(
    cache: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    case: str,
    body: bytes,
    headers: dict[str, str],
    token: str,
) -> None:
    org = make_org()
    auth = {
        "org": org.headers,
        "none": {},
        "unknown": {"Authorization": "Bearer orz_not_a_real_token"},
        "staff": staff_headers("engineering"),
        "fleet": staff_headers("fleet"),
    }[token]
    for _ in range(2):  # the second time from the token cache, when it is on
        r = client.post("/v1/heartbeats", content=body, headers={**headers, **auth})
        got = (r.status_code, r.json())
        assert got == EXPECTED[case]
