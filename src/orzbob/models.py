"""Imports every table so the metadata (and Alembic) sees the whole schema."""

from orzbob.accounts.models import ApiToken, Org
from orzbob.kit.db import Base
from orzbob.testclock.models import TestClockState

__all__ = ["ApiToken", "Base", "Org", "TestClockState"]
