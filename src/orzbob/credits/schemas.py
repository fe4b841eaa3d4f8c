from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from orzbob.kit.money import parse_amount

# Plain dollars and cents only: no exponent, sign, spaces, underscores or a third decimal, so
# what support types is exactly what is stored ("1e2", "25.000" and "25." are refused).
# `\Z`, not `$`: `$` also matches before a trailing newline, and "5.00\n" is no amount.
_DOLLARS = re.compile(r"\A[0-9]{1,12}(\.[0-9]{1,2})?\Z")


def parse_dollars(value: Any) -> Decimal:
    """A dollar amount sent as a decimal string such as "25.00"; JSON numbers are refused
    because a float cannot carry an exact amount of money."""
    if value is None:
        raise ValueError('is required: a decimal string such as "25.00"')
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "25.00", not a JSON number')
    if not _DOLLARS.match(value):
        if value.strip().startswith("-"):
            raise ValueError("cannot be negative")
        if re.match(r"\A[0-9]+\.[0-9]{3,}\Z", value):
            raise ValueError("cannot have more than two decimal places")
        raise ValueError('must be a plain amount of dollars such as "25.00"')
    return parse_amount(value)


Dollars = Annotated[Decimal, BeforeValidator(parse_dollars)]


class CreditGrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Dollars = Field(description='Dollars as a decimal string, e.g. "25.00"; above 0.')
    reason: str = Field(min_length=1, max_length=2000, description="Why; shown in the audit log.")

    @field_validator("amount")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be more than 0.00")
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("cannot be blank")
        return v.strip()


class CreditOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    amount: str = Field(description="Dollars, decimal string.")
    reason: str
    granted_by_role: str
    period_start: datetime
    period_end: datetime
    created_at: datetime
    polar_state: str
    polar_error: str | None
    polar_reference: str | None


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    at: datetime
    org_id: uuid.UUID | None
    actor_token_id: uuid.UUID | None
    actor_role: str
    action: str
    reason: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_before: uuid.UUID | None = Field(
        description="Pass as `before` to read older entries; null on the last page."
    )
