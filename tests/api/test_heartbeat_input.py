"""The single heartbeat's answers to malformed input are pinned as they were served through
FastAPI's own body parsing and dependency solving: the route now parses its body itself, and
every status, error code, detail and field below must stay as it was."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from tests.conftest import OrgHandle

JSON = {"Content-Type": "application/json"}
NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"
BAD_ID = "instance_id: Input should be a valid UUID, invalid character: found `n` at 0"
NOT_A_BOOL = "active: Input should be a valid boolean"
PATTERN = "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'"
# (case, body bytes, extra headers, path id: "ok", "upper", "plain" or a literal, token kind)
CASES: list[tuple[str, bytes, dict[str, str], str, str]] = [
    ("truncated json", b'{"active": tru', JSON, "ok", "org"),
    ("trailing garbage", b'{"active": true} x', JSON, "ok", "org"),
    ("a list", b"[]", JSON, "ok", "org"),
    ("null", b"null", JSON, "ok", "org"),
    ("a string", b'"active"', JSON, "ok", "org"),
    ("empty object", b"{}", JSON, "ok", "org"),
    ("empty body", b"", JSON, "ok", "org"),
    ("active a string", b'{"active": "yes"}', JSON, "ok", "org"),
    ("active a number", b'{"active": 1}', JSON, "ok", "org"),
    ("active null", b'{"active": null}', JSON, "ok", "org"),
    ("unknown field", b'{"active": true, "extra": 1}', JSON, "ok", "org"),
    ("bad source", b'{"active": true, "source": "Bad Source"}', JSON, "ok", "org"),
    ("empty source", b'{"active": true, "source": ""}', JSON, "ok", "org"),
    ("long source", b'{"active": true, "source": "' + b"a" * 33 + b'"}', JSON, "ok", "org"),
    ("source newline", b'{"active": true, "source": "ide\\n"}', JSON, "ok", "org"),
    ("source a number", b'{"active": true, "source": 5}', JSON, "ok", "org"),
    ("several errors", b'{"active": 2, "source": "X", "x": 1}', JSON, "ok", "org"),
    ("not utf-8", b'{"active": true, "source": "\xff"}', JSON, "ok", "org"),
    ("no content type", b'{"active": true}', {}, "ok", "org"),
    ("text/plain", b'{"active": true}', {"Content-Type": "text/plain"}, "ok", "org"),
    ("nul in body", b'{"active": true, "source": "a\\u0000"}', JSON, "ok", "org"),
    ("bad id", b'{"active": true}', JSON, "not-a-uuid", "org"),
    ("bad id and body", b'{"active": "no"}', JSON, "not-a-uuid", "org"),
    ("bad id and bad json", b"{", JSON, "not-a-uuid", "org"),
    ("unknown id", b'{"active": true}', JSON, "00000000-0000-0000-0000-000000000000", "org"),
    ("anonymous bad json", b"{", JSON, "ok", "none"),
    ("anonymous bad types", b'{"active": 1}', JSON, "ok", "none"),
    ("unknown token bad json", b"{", JSON, "ok", "unknown"),
    ("unknown token bad types", b'{"active": 1}', JSON, "ok", "unknown"),
    ("staff token bad types", b'{"active": 1}', JSON, "ok", "staff"),
    ("staff token", b'{"active": true}', JSON, "ok", "staff"),
    ("upper-case id", b'{"active": true, "source": "ssh"}', JSON, "upper", "org"),
    ("id without hyphens", b'{"active": true, "source": "ssh"}', JSON, "plain", "org"),
    ("id in braces", b'{"active": true}', JSON, "braces", "org"),
    ("duplicate keys", b'{"active": false, "source": "job", "active": true}', JSON, "ok", "org"),
    (
        "charset",
        b'{"active": true, "source": "ide"}',
        {"Content-Type": "application/json; charset=utf-8"},
        "ok",
        "org",
    ),
    (
        "json suffix",
        b'{"active": true}',
        {"Content-Type": "application/merge-patch+json"},
        "ok",
        "org",
    ),
    ("utf-16", '{"active": true, "source": "ide"}'.encode("utf-16"), JSON, "ok", "org"),
    ("escaped key", b'{"act\\u0069ve": true, "source": "\\u0069de"}', JSON, "ok", "org"),
    ("whitespace", b' \n{"active":false}\n ', JSON, "ok", "org"),
    ("null source", b'{"active": true, "source": null}', JSON, "ok", "org"),
    ("passive", b'{"active": false, "source": "ssh"}', JSON, "ok", "org"),
]
# What each case answered (the instance's own fields left out of a 200).
EXPECTED: dict[str, tuple[int, dict[str, Any]]] = {
    "a list": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [
                {
                    "field": "body",
                    "message": NOT_AN_OBJECT,
                }
            ],
        },
    ),
    "a string": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [
                {
                    "field": "body",
                    "message": NOT_AN_OBJECT,
                }
            ],
        },
    ),
    "active a number": (
        422,
        {
            "error": "invalid_request",
            "detail": "active: Input should be a valid boolean",
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"}
            ],
        },
    ),
    "active a string": (
        422,
        {
            "error": "invalid_request",
            "detail": "active: Input should be a valid boolean",
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"}
            ],
        },
    ),
    "active null": (
        422,
        {
            "error": "invalid_request",
            "detail": "active: Input should be a valid boolean",
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"}
            ],
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
    "bad id and bad json": (
        422,
        {
            "error": "invalid_request",
            "detail": "The request body is not valid JSON.",
            "fields": [{"field": "body.1", "message": "The request body is not valid JSON."}],
        },
    ),
    "bad id and body": (
        422,
        {
            "error": "invalid_request",
            "detail": BAD_ID + " " + NOT_A_BOOL,
            "fields": [
                {
                    "field": "path.instance_id",
                    "message": BAD_ID,
                },
                {"field": "body.active", "message": "active: Input should be a valid boolean"},
            ],
        },
    ),
    "bad id": (
        422,
        {
            "error": "invalid_request",
            "detail": BAD_ID,
            "fields": [
                {
                    "field": "path.instance_id",
                    "message": BAD_ID,
                }
            ],
        },
    ),
    "bad source": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
            "fields": [
                {
                    "field": "body.source",
                    "message": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
                }
            ],
        },
    ),
    "charset": (200, {"state": "running", "last_active_source": "ide", "notice": None}),
    "duplicate keys": (200, {"state": "running", "last_active_source": "job", "notice": None}),
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
            "detail": "active is required.",
            "fields": [{"field": "body.active", "message": "active is required."}],
        },
    ),
    "empty source": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: String should have at least 1 character",
            "fields": [
                {
                    "field": "body.source",
                    "message": "source: String should have at least 1 character",
                }
            ],
        },
    ),
    "escaped key": (200, {"state": "running", "last_active_source": "ide", "notice": None}),
    "id in braces": (200, {"state": "running", "last_active_source": None, "notice": None}),
    "id without hyphens": (200, {"state": "running", "last_active_source": "ssh", "notice": None}),
    "json suffix": (200, {"state": "running", "last_active_source": None, "notice": None}),
    "long source": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: String should have at most 32 characters",
            "fields": [
                {
                    "field": "body.source",
                    "message": "source: String should have at most 32 characters",
                }
            ],
        },
    ),
    "no content type": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [
                {
                    "field": "body",
                    "message": NOT_AN_OBJECT,
                }
            ],
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
    "nul in body": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
            "fields": [
                {
                    "field": "body.source",
                    "message": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
                }
            ],
        },
    ),
    "null source": (200, {"state": "running", "last_active_source": None, "notice": None}),
    "null": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [
                {
                    "field": "body",
                    "message": NOT_AN_OBJECT,
                }
            ],
        },
    ),
    "passive": (200, {"state": "running", "last_active_source": None, "notice": None}),
    "several errors": (
        422,
        {
            "error": "invalid_request",
            "detail": " ".join((NOT_A_BOOL, PATTERN, "x: Extra inputs are not permitted")),
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"},
                {
                    "field": "body.source",
                    "message": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
                },
                {"field": "body.x", "message": "x: Extra inputs are not permitted"},
            ],
        },
    ),
    "source a number": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: Input should be a valid string",
            "fields": [
                {"field": "body.source", "message": "source: Input should be a valid string"}
            ],
        },
    ),
    "source newline": (
        422,
        {
            "error": "invalid_request",
            "detail": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
            "fields": [
                {
                    "field": "body.source",
                    "message": "source: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
                }
            ],
        },
    ),
    "staff token bad types": (
        422,
        {
            "error": "invalid_request",
            "detail": "active: Input should be a valid boolean",
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"}
            ],
        },
    ),
    "staff token": (
        403,
        {
            "error": "forbidden",
            "detail": "This endpoint is for organization tokens; staff use /v1/admin/….",
        },
    ),
    "text/plain": (
        422,
        {
            "error": "invalid_request",
            "detail": NOT_AN_OBJECT,
            "fields": [
                {
                    "field": "body",
                    "message": NOT_AN_OBJECT,
                }
            ],
        },
    ),
    "trailing garbage": (
        422,
        {
            "error": "invalid_request",
            "detail": "The request body is not valid JSON.",
            "fields": [{"field": "body.17", "message": "The request body is not valid JSON."}],
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
    "unknown field": (
        422,
        {
            "error": "invalid_request",
            "detail": "extra: Extra inputs are not permitted",
            "fields": [{"field": "body.extra", "message": "extra: Extra inputs are not permitted"}],
        },
    ),
    "unknown id": (404, {"error": "not_found", "detail": "Instance not found."}),
    "unknown token bad json": (
        401,
        {"error": "unauthorized", "detail": "The API token is unknown or has been revoked."},
    ),
    "unknown token bad types": (
        422,
        {
            "error": "invalid_request",
            "detail": "active: Input should be a valid boolean",
            "fields": [
                {"field": "body.active", "message": "active: Input should be a valid boolean"}
            ],
        },
    ),
    "upper-case id": (200, {"state": "running", "last_active_source": "ssh", "notice": None}),
    "utf-16": (
        422,
        {"error": "invalid_request", "detail": "Text cannot contain a NUL character (\\u0000)."},
    ),
    "whitespace": (200, {"state": "running", "last_active_source": None, "notice": None}),
}


def _id(kind: str, iid: str) -> str:
    if kind == "ok":
        return iid
    if kind == "upper":
        return iid.upper()
    if kind == "plain":
        return iid.replace("-", "")
    if kind == "braces":
        return "{" + iid + "}"
    return kind


def _answer(r: Any) -> tuple[int, dict[str, Any]]:
    body = r.json()
    if r.status_code == 200:
        body = {k: body[k] for k in ("state", "last_active_source", "notice")}
    return r.status_code, body


@pytest.mark.parametrize(
    ("case", "body", "headers", "path_id", "token"), CASES, ids=[c[0] for c in CASES]
)
def test_each_malformed_heartbeat_answers_as_before(
    cache: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    case: str,
    body: bytes,
    headers: dict[str, str],
    path_id: str,
    token: str,
) -> None:
    org = make_org()
    r = client.post("/v1/instances", headers=org.headers, json={"tier": "small"})
    iid = str(r.json()["id"])
    auth = {
        "org": org.headers,
        "none": {},
        "unknown": {"Authorization": "Bearer orz_not_a_real_token"},
        "staff": staff_headers("engineering"),
    }[token]
    for _ in range(2):  # the second time from the token cache, when it is on
        r = client.post(
            f"/v1/instances/{_id(path_id, iid)}/heartbeat",
            content=body,
            headers={**headers, **auth},
        )
        got = _answer(r)
        assert got == EXPECTED[case]


def test_a_well_formed_beat_takes_the_fast_way_and_anything_else_the_declared_one(
    client: TestClient, make_org: Callable[..., OrgHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast ways (`api.routes.fast_first`) serve the common single and bulk beats without
    FastAPI's dependency solving, and leave the rest to the declared endpoints."""
    solved: list[object] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs.get("request"))
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    org = make_org()
    iid = client.post("/v1/instances", headers=org.headers, json={"tier": "small"}).json()["id"]
    solved.clear()
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": True})
    assert r.status_code == 200, r.text
    beats = {"beats": [{"instance_id": iid, "active": True}]}
    r = client.post("/v1/heartbeats", headers=org.headers, json=beats)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert solved == []
    r = client.post(f"/v1/instances/{iid}/heartbeat", headers=org.headers, json={"active": 1})
    assert r.status_code == 422
    r = client.post("/v1/heartbeats", headers=org.headers, json={"beats": []})
    assert r.status_code == 422
    assert len(solved) == 2
