"""The landing page and the dashboard shell are served by the API, from the package; every
response carries a request id, and a 500 names it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from orzbob.api.pages import dollars, entry_plan
from orzbob.billing.service import billing_service
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle


def test_landing_page_is_rendered_from_the_catalog(client: TestClient, runtime: Runtime) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Starts at <strong>$20/mo</strong> incl. 200 h" in r.text
    for tier in runtime.catalog.tiers:
        assert f"{dollars(tier.hourly_rate)}/h" in r.text
    hidden = [p for p in runtime.catalog.plans if p.visibility == "private"]
    assert hidden and all(p.name not in r.text for p in hidden)
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_entry_plan_follows_the_catalog(runtime: Runtime) -> None:
    entry = entry_plan(runtime.catalog)
    assert (entry.id, dollars(entry.monthly_base), entry.included_small_hours) == (
        "base-plus-usage", "$20", 200,
    )  # fmt: skip
    cheaper = runtime.catalog.model_copy(
        update={
            "plans": (
                *runtime.catalog.plans,
                entry.model_copy(update={"id": "lite", "monthly_base": entry.monthly_base / 2}),
            )
        }
    )
    assert entry_plan(cheaper).id == "lite"


def test_dashboard_shell_and_static_files(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert 'type="password"' in page.text and "/static/dashboard.js" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    js = client.get("/static/dashboard.js")
    assert js.status_code == 200 and "sessionStorage" in js.text and "innerHTML" not in js.text
    assert client.get("/static/orzbob.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_billing_has_as_of_and_every_response_a_request_id(
    client: TestClient, runtime: Runtime, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    r = client.get("/v1/billing", headers={**org.headers, "X-Request-ID": "abc-123"})
    assert r.json()["as_of"] == runtime.clock.now().isoformat().replace("+00:00", "Z")
    assert r.headers["x-request-id"] == "abc-123"
    fresh = client.get("/healthz", headers={"X-Request-ID": "bad id\x7f"}).headers["x-request-id"]
    assert len(fresh) == 32 and fresh != "bad id"


def test_a_server_error_names_its_request_id(
    app: object, make_org: Callable[..., OrgHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org()

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(billing_service, "read", boom)
    with TestClient(app, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        r = c.get("/v1/billing", headers=org.headers)
    assert r.status_code == 500
    assert r.json()["request_id"] == r.headers["x-request-id"] and len(r.json()["request_id"]) == 32
    assert "simulated" not in r.text
