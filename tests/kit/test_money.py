from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orzbob.kit.money import from_cents, minutes_cost, parse_amount, round_cents, to_cents


def test_round_half_up_at_the_cent() -> None:
    assert round_cents(Decimal("0.005")) == Decimal("0.01")
    assert round_cents(Decimal("0.0049")) == Decimal("0.00")
    assert round_cents(Decimal("2.675")) == Decimal("2.68")


def test_minutes_cost_rounds_once_per_line() -> None:
    # 30 small-hours at $0.083 and 20 medium-hours at $0.167 (the pricing example).
    assert minutes_cost(30 * 60, Decimal("0.083")) == Decimal("2.49")
    assert minutes_cost(20 * 60, Decimal("0.167")) == Decimal("3.34")
    # One minute of small costs 0.0013833… and rounds to 0.00, not up.
    assert minutes_cost(1, Decimal("0.083")) == Decimal("0.00")
    assert minutes_cost(7, Decimal("0.083")) == Decimal("0.01")


@pytest.mark.parametrize("bad", ["-1", "abc", "1.005", "NaN", "Infinity", ""])
def test_parse_amount_refuses_bad_input(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)


def test_parse_amount_refuses_floats() -> None:
    with pytest.raises(ValueError, match="float"):
        parse_amount(1.5)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**11))
def test_cents_round_trip(cents: int) -> None:
    assert to_cents(from_cents(cents)) == cents
    assert parse_amount(str(from_cents(cents))) == from_cents(cents)


@given(
    st.integers(min_value=0, max_value=10**7),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=3),
)
def test_minutes_cost_is_within_half_a_cent_of_exact(minutes: int, rate: Decimal) -> None:
    exact = Decimal(minutes) * rate / 60
    cost = minutes_cost(minutes, rate)
    assert cost == cost.quantize(Decimal("0.01"))
    assert abs(cost - exact) <= Decimal("0.005")


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=20))
def test_minutes_cost_is_monotonic(minutes: list[int]) -> None:
    rate = Decimal("0.167")
    costs = [minutes_cost(m, rate) for m in sorted(minutes)]
    assert costs == sorted(costs)
