from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z]{2,}$")


def check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value) or len(value) > 254:
        raise ValueError(f"{value!r} is not a valid e-mail address")
    return value.lower()


class OrgCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    billing_emails: list[str] = Field(min_length=1, max_length=20)
    plan: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name cannot be blank")
        return v.strip()

    @field_validator("billing_emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        return [check_email(e) for e in v]


class OrgUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    billing_emails: list[str] | None = Field(None, min_length=1, max_length=20)

    @field_validator("billing_emails")
    @classmethod
    def _emails(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_email(e) for e in v]


class ContactsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    billing_emails: list[str] = Field(
        min_length=1, max_length=20, description="1 to 20 addresses that receive billing e-mail."
    )

    @field_validator("billing_emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        # Case-insensitive duplicates would mail the same person twice.
        return list(dict.fromkeys(check_email(e) for e in v))


class OrgOut(BaseModel):
    id: uuid.UUID
    name: str
    billing_emails: list[str]
    plan: str
    signup_at: datetime
    spend_limit: Decimal | None
    created_at: datetime


class OrgCreatedOut(OrgOut):
    token: str = Field(description="The org's first admin API token. Shown this once only.")
    token_id: uuid.UUID


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    name: str = Field("api token", min_length=1, max_length=200)


class TokenOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID | None
    role: str
    name: str
    token: str = Field(description="Shown once; only a hash is stored.")


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str
