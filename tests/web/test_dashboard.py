"""The dashboard and the landing page in a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Route, expect

from orzbob.catalog.models import Catalog
from orzbob.catalog.service import default_catalog
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance, without_time_caps
from tests.web.conftest import screenshot


@pytest.fixture
def catalog() -> Catalog:
    # States that take days of one instance's run time: the time caps are tested in
    # tests/throttle.
    return without_time_caps(default_catalog())


HOUR = 3600


def _start(client: TestClient, org: OrgHandle, name: str, tier: str = "small") -> str:
    r = client.post("/v1/instances", headers=org.headers, json={"tier": tier, "name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _billing(client: TestClient, org: OrgHandle) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/v1/billing", headers=org.headers).json()
    return body


def _sign_in(page: Page, base_url: str, org: OrgHandle) -> None:
    page.goto(f"{base_url}/dashboard")
    page.get_by_label("API token").fill(org.token)
    page.get_by_label("API token").press("Enter")  # the keyboard is enough
    expect(page.locator("#app")).to_be_visible()


def _field(page: Page, name: str) -> str:
    return page.locator(f'[data-field="{name}"]').inner_text()


def _expect_card_shows(page: Page, b: dict[str, Any]) -> None:
    """The card shows exactly the figures of this GET /v1/billing body."""
    pct = f"{b['percent_used']:.2f} %"
    expect(page.locator('[data-field="allowance"]')).to_have_text(
        f"{b['hours_used']:,.2f} / {b['hours_included']:.0f} small-hours ({pct})"
    )
    est = b["estimate"]
    assert _field(page, "estimated_bill").startswith(f"${est['total']} (base ${est['base']}")
    assert _field(page, "forecast").startswith(f"${b['forecast']['projected_bill']},")
    assert _field(page, "reset").startswith(b["reset_date"][:10])
    assert _field(page, "daily_usage") == b["daily_usage"]
    assert _field(page, "throttle_status") == b["throttle_status"]
    assert _field(page, "organization") == b["organization"]
    as_of = b["as_of"][11:16]
    expect(page.locator("#as-of")).to_have_text(f"as of {as_of} UTC")
    for t in b["tiers"]:
        row = page.locator(f'li[data-tier="{t["tier"]}"]')
        expect(row).to_contain_text(f"${t['cost']}")
        expect(row).to_contain_text(f"{t['hours']:,.2f} h")
    bar = page.get_by_role("progressbar", name="Allowance used")
    expect(bar).to_have_attribute("aria-valuenow", str(round(min(b["percent_used"], 100))))


def test_sign_in_numbers_pause_and_failed_refresh(
    page: Page,
    base_url: str,
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org("<b>Acme</b> [/]", plan="base-plus-usage")
    r = client.put("/v1/billing/spend-limit", headers=org.headers, json={"amount": "40.00"})
    assert r.status_code == 200
    busy = _start(client, org, "build-box", "medium")
    _start(client, org, "<img src=x onerror=alert(1)>")
    advance(runtime, 30 * HOUR)
    page.clock.install()  # the page's timers run only when the test says so

    _sign_in(page, base_url, org)
    assert org.token not in page.url
    assert page.evaluate("sessionStorage.getItem('orzbob.token')") == org.token
    before = _billing(client, org)
    _expect_card_shows(page, before)
    expect(page.locator('[data-field="organization"]')).to_have_text("<b>Acme</b> [/]")
    expect(page.get_by_role("progressbar", name="Spend limit used")).to_be_visible()
    expect(page.locator("#instances li")).to_have_count(2)
    expect(page.locator("#instances")).to_contain_text("<img src=x onerror=alert(1)>")
    screenshot(page, "dashboard-desktop")

    # Time passes on the service; pausing from the page refreshes the card.
    advance(runtime, 2 * HOUR)
    page.get_by_role("button", name="Pause build-box").click()
    expect(page.get_by_role("button", name="Resume build-box")).to_be_visible()
    after = _billing(client, org)
    assert after["hours_used"] > before["hours_used"]
    _expect_card_shows(page, after)
    state = client.get(f"/v1/instances/{busy}", headers=org.headers).json()
    assert (state["state"], state["reason"]) == ("paused", "user")
    expect(page.locator(f'li[data-instance="{busy}"]')).to_contain_text("paused (user)")

    # One refresh fails: the last figures stay, with a banner saying so.
    advance(runtime, HOUR)

    def fail_once(route: Route) -> None:
        route.fulfill(status=503, json={"error": "unavailable", "detail": "maintenance"})

    page.route(re.compile(r".*/v1/billing$"), fail_once)
    page.clock.run_for(61_000)
    banner = page.get_by_role("alert").filter(has_text="Refresh failed")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("maintenance")
    expect(banner).to_contain_text(f"as of {after['as_of'][11:16]} UTC")
    _expect_card_shows(page, after)  # kept, not blanked
    screenshot(page, "dashboard-refresh-failed")

    page.unroute(re.compile(r".*/v1/billing$"))
    page.clock.run_for(61_000)
    expect(banner).to_be_hidden()
    _expect_card_shows(page, _billing(client, org))

    # Resume from the page too, then sign out: the token leaves the tab.
    page.get_by_role("button", name="Resume build-box").click()
    expect(page.get_by_role("button", name="Pause build-box")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('orzbob.token')") is None


def test_bad_token_free_tier_paused_and_csv_on_a_phone(
    browser: Any,
    base_url: str,
    client: TestClient,
    runtime: Runtime,
    make_org: Callable[..., OrgHandle],
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, accept_downloads=True
    )
    page = context.new_page()
    try:
        page.goto(f"{base_url}/dashboard")
        page.get_by_label("API token").fill("orz_not_a_token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#sign-in-error")).to_contain_text("refused")

        org = make_org("Tiny Co", plan="free-tier")
        iid = _start(client, org, "hobby")
        advance(runtime, 10 * HOUR)
        client.post(f"/v1/instances/{iid}/pause", headers=org.headers)
        _sign_in(page, base_url, org)
        b = _billing(client, org)
        _expect_card_shows(page, b)
        status = page.locator('[data-field="status"]')
        expect(status).to_contain_text("Paused (allowance used up)")
        expect(status).not_to_contain_text("overage")
        # Readable on a phone: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "dashboard-phone")

        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        csv_text = download.value.path().read_bytes().decode()
        expected = client.get("/v1/billing/usage?format=csv", headers=org.headers).text
        assert csv_text == expected and "minutes" in csv_text.splitlines()[0]
    finally:
        context.close()


def test_landing_page_pricing_from_the_catalog(page: Page, base_url: str, runtime: Runtime) -> None:
    page.goto(base_url + "/")
    heading = page.get_by_role("heading", level=2, name=re.compile("Starts at"))
    expect(heading).to_have_text("Starts at $20/mo incl. 200 h")
    expect(heading.locator("strong")).to_have_text("$20/mo")
    for tier in runtime.catalog.tiers:
        row = page.get_by_role("row", name=re.compile(f"^{tier.name} "))
        expect(row).to_contain_text(f"${tier.hourly_rate}/h")
    public = [p for p in runtime.catalog.plans if p.visibility == "public"]
    expect(page.locator("article.plan h3")).to_have_text([p.name for p in public])
    screenshot(page, "landing")


def test_upcoming_caps_and_alerts_are_shown_as_text(
    page: Page,
    base_url: str,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
) -> None:
    """`upcoming` and the alert list come from other parts of the service; the card shows them
    when they are there, and never runs their text as HTML."""
    org = make_org("Acme", plan="base-plus-usage")
    body = _billing(client, org)
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    body["upcoming"] = [
        {
            "cap": "idle",
            "instance_id": None,
            "instance_name": evil,
            "at": "2026-03-10T12:40:00Z",
            "detail": "No activity for 50 min.",
        }
    ]
    alerts = [
        {
            "kind": "allowance",
            "threshold": 50,
            "state": "sent",
            "created_at": "2026-03-10T11:00:00Z",
            "sent_at": "2026-03-10T11:00:03Z",
            "subject": evil,
        }
    ]

    def billing(route: Route) -> None:
        route.fulfill(json=body)

    page.route(re.compile(r".*/v1/billing$"), billing)
    page.route(re.compile(r".*/v1/billing/alerts$"), lambda route: route.fulfill(json=alerts))
    _sign_in(page, base_url, org)
    caps = page.locator("#caps")
    expect(caps).to_contain_text(f"Soon: idle on {evil} at 2026-03-10 12:40 UTC.")
    expect(page.locator("#alerts")).to_contain_text(
        f"allowance 50 % (sent 2026-03-10 11:00 UTC): {evil}"
    )
    assert page.locator("#caps img, #alerts img").count() == 0
    assert page.title() != "pwned"
