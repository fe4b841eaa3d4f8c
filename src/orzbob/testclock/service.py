"""The persisted test clock, inside the caller's transaction (docs/spec.md §10). Moving the
process clocks, and running the jobs that fall due, is `testclock.control`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from orzbob.testclock.repository import test_clock_repository


class TestClockService:
    def persisted_now(self, session: Session) -> datetime | None:
        """Where the deployment's test clock stands (None before the first advance)."""
        return test_clock_repository.persisted_now(session)

    def persist(self, session: Session, now: datetime) -> None:
        test_clock_repository.save(session, now)


test_clock_service = TestClockService()
