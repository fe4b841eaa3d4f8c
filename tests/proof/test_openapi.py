"""The published OpenAPI document is reviewed like code: it must equal the checked-in
snapshot (docs/openapi.json). After a deliberate API change, refresh it with
`ORZBOB_UPDATE_OPENAPI=1 .venv/bin/python -m pytest tests/proof/test_openapi.py` and review
the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi.testclient import TestClient

SNAPSHOT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
ERROR_CODES = {"400", "401", "403", "404", "409", "413", "422", "502", "503"}


def published(client: TestClient) -> dict:  # type: ignore[type-arg]
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_the_document_equals_the_reviewed_snapshot(client: TestClient) -> None:
    doc = published(client)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if os.environ.get("ORZBOB_UPDATE_OPENAPI"):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "no snapshot yet: run with ORZBOB_UPDATE_OPENAPI=1"
    assert SNAPSHOT.read_text() == text, (
        "The OpenAPI document changed: review it, then refresh docs/openapi.json with "
        "ORZBOB_UPDATE_OPENAPI=1"
    )


def test_every_error_answer_uses_the_real_error_body(client: TestClient) -> None:
    doc = published(client)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, answer in op["responses"].items():
                if code in ERROR_CODES:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
            if op.get("security"):
                assert {"401", "403", "422"} <= set(op["responses"]), (method, path)


def test_the_webhook_documents_its_raw_body_headers_and_503(client: TestClient) -> None:
    op = published(client)["paths"]["/v1/webhooks/polar"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["type", "data"]
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert {"200", "202", "400", "401", "413", "503"} == set(op["responses"])
