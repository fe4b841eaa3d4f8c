"""The pages a person opens: the landing page at `/` and the dashboard at `/dashboard`.

Both ship inside the package (templates/ and static/ beside this file). The landing page is
rendered from the catalog, so plans and rates are never typed by hand. The dashboard is a
static shell: its script reads `GET /v1/billing` and the instances API with the token the
person signs in with, so it shows exactly what the CLI shows.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from orzbob.api.deps import RuntimeDep
from orzbob.catalog.models import Catalog, Plan

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=HERE / "static")
router = APIRouter(include_in_schema=False)

# The pages load only their own script and style; data comes from this origin's API.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def dollars(amount: Decimal) -> str:
    """20.00 → "$20", 0.083 → "$0.083": whole dollars without cents, rates as written."""
    return f"${amount:,.0f}" if amount == amount.to_integral_value() else f"${amount}"


def entry_plan(catalog: Catalog) -> Plan:
    """The cheapest public plan that has a price: what "Starts at" quotes."""
    paid = [p for p in catalog.plans if p.visibility == "public" and p.monthly_base > 0]
    candidates = paid or [p for p in catalog.plans if p.visibility == "public"]
    return min(candidates, key=lambda p: p.monthly_base)


@router.get("/", response_class=HTMLResponse)
def landing(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    catalog = runtime.catalog
    entry = entry_plan(catalog)
    return templates.TemplateResponse(
        request,
        "landing.html",
        {
            "plans": [p for p in catalog.plans if p.visibility == "public"],
            "tiers": catalog.tiers,
            "tier_names": {t.id: t.name for t in catalog.tiers},
            "entry": entry,
            "dollars": dollars,
        },
        headers=SECURITY_HEADERS,
    )


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "dashboard.html", {}, headers=SECURITY_HEADERS)
