"""The persisted test clock: one row, id 1."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from orzbob.testclock.models import TestClockState


class TestClockRepository:
    def persisted_now(self, session: Session) -> datetime | None:
        state = session.get(TestClockState, 1)
        return state.now if state is not None else None

    def save(self, session: Session, now: datetime) -> None:
        state = session.get(TestClockState, 1)
        if state is None:
            session.add(TestClockState(id=1, now=now))
        else:
            state.now = now


test_clock_repository = TestClockRepository()
