import pytest
from sqlalchemy import text

from orzbob.kit.db import insert_ignore, on_commit
from orzbob.runtime import Runtime
from orzbob.testclock import models as clock_models
from tests.conftest import T0


def test_insert_ignore_reports_how_many_went_in(runtime: Runtime) -> None:
    table = clock_models.TestClockState.__table__
    with runtime.session() as s:
        assert insert_ignore(s, table, [{"id": 1, "now": T0}, {"id": 2, "now": T0}]) == 2  # type: ignore[arg-type]
        assert insert_ignore(s, table, [{"id": 2, "now": T0}, {"id": 3, "now": T0}]) == 1  # type: ignore[arg-type]
        assert s.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 3


def test_on_commit_runs_after_a_commit_and_never_after_a_rollback(runtime: Runtime) -> None:
    calls: list[str] = []
    with runtime.session() as s:
        on_commit(s, lambda: calls.append("committed"))
        assert calls == []
    assert calls == ["committed"]
    with pytest.raises(RuntimeError), runtime.session() as s:
        on_commit(s, lambda: calls.append("rolled back"))
        raise RuntimeError("boom")
    with runtime.session():
        pass
    assert calls == ["committed"]
