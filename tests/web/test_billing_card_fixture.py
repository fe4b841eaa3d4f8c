"""The React card's tests run on a recorded GET /v1/billing response; it must stay a response
the API could give today."""

from __future__ import annotations

import json
from pathlib import Path

from orzbob.billing.schemas import BillingOut

RECORDED = Path(__file__).parents[2] / "web" / "test" / "billing.recorded.json"


def test_recorded_response_matches_the_api_schema() -> None:
    body = json.loads(RECORDED.read_text())
    assert set(body) <= set(BillingOut.model_fields), set(body) - set(BillingOut.model_fields)
    required = {n for n, f in BillingOut.model_fields.items() if f.is_required()}
    assert required <= set(body), required - set(body)
    BillingOut.model_validate(body)
