"""The credit balance carried between periods (credits.balance), and how the quota status
reaches it without importing credits (the hook)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from orzbob.credits.balance import carried_in
from orzbob.quota import service as quota
from orzbob.quota.periods import Period


def month(m: int) -> Period:
    return Period(datetime(2026, m, 1, tzinfo=UTC), datetime(2026, m + 1, 1, tzinfo=UTC))


def test_each_closed_period_absorbs_what_it_can_and_the_rest_moves_on() -> None:
    grants = [(datetime(2026, 1, 5, tzinfo=UTC), 5000), (datetime(2026, 2, 9, tzinfo=UTC), 1000)]
    # January costs $20.00 of the $50.00; February $45.00 of the $30.00 left plus $10.00.
    assert carried_in(grants, [(month(1), 2000), (month(2), 4500)]) == 0
    assert carried_in(grants, [(month(1), 2000), (month(2), 1500)]) == 2500
    assert carried_in(grants, []) == 0


def test_the_status_refuses_to_price_without_the_credits_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An estimate without credits would be too high: no silent $0.00 of credit.
    monkeypatch.setattr(quota, "credit_providers", [])
    with pytest.raises(RuntimeError, match="install_hooks"):
        quota.credits_for_period(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            month(3),
            now=datetime(2026, 3, 2, tzinfo=UTC),
            gross=Decimal("20.00"),
        )
