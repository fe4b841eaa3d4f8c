"""Exact money on `Decimal`: dollars with two places, rounded half-up once per line."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def minutes_cost(minutes: int, hourly_rate: Decimal) -> Decimal:
    """Cost of `minutes` at `hourly_rate`, rounded to the cent once (docs/spec.md §1)."""
    return round_cents(Decimal(minutes) * hourly_rate / Decimal(60))


def parse_amount(value: str | int | Decimal, *, field: str = "amount") -> Decimal:
    """A non-negative dollar amount with at most two decimal places, or ValueError."""
    if isinstance(value, float):
        raise ValueError(f'{field} must be a decimal string such as "25.00", not a float')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f'{field} must be a number of dollars such as "25.00"') from exc
    if not amount.is_finite():
        raise ValueError(f"{field} must be a finite number of dollars")
    if amount < 0:
        raise ValueError(f"{field} cannot be negative")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{field} cannot have more than two decimal places")
    if amount > Decimal("1000000000"):
        raise ValueError(f"{field} is too large")
    return amount.quantize(CENT)


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_UP))


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_usd(amount: Decimal) -> str:
    return f"${amount:,.2f}"
