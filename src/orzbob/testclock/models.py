from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column

from orzbob.kit.db import Base


class TestClockState(Base):
    """The test clock's time, kept so a restart never moves it backwards."""

    __tablename__ = "test_clock_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    now: Mapped[datetime]
