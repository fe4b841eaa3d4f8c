from sqlalchemy import text

from orzbob.kit.db import insert_ignore
from orzbob.runtime import Runtime
from orzbob.testclock import models as clock_models
from tests.conftest import T0


def test_insert_ignore_reports_how_many_went_in(runtime: Runtime) -> None:
    table = clock_models.TestClockState.__table__
    with runtime.session() as s:
        assert insert_ignore(s, table, [{"id": 1, "now": T0}, {"id": 2, "now": T0}]) == 2  # type: ignore[arg-type]
        assert insert_ignore(s, table, [{"id": 2, "now": T0}, {"id": 3, "now": T0}]) == 1  # type: ignore[arg-type]
        assert s.execute(text("SELECT count(*) FROM test_clock_state")).scalar() == 3
