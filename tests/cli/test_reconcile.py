"""`orz polar reconcile` against the test database and the local Polar server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orzbob.runtime import Runtime
from tests.cli.conftest import Invoke
from tests.metering.polar_support import TOKEN, control, flusher_for, local_polar, make_records
from tests.polar.support import use_billing


@pytest.fixture
def polar(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with local_polar(tmp_path, accept_future_timestamps=True) as url:
        use_billing(runtime, url)
        yield url


def test_reconcile_prints_classes_and_keeps_the_run(
    runtime: Runtime, polar: str, orz_db: Invoke
) -> None:
    org_id, _ = make_records(runtime, 3)
    flusher_for(runtime, runtime.settings).flush()
    now = runtime.clock.now()
    span = f"{(now - timedelta(days=1)).date()}..{(now + timedelta(days=1)).date()}"
    env = {"POLAR_API_URL": polar, "POLAR_API_KEY": TOKEN}
    with control(polar) as c:
        ids = [e["external_id"] for e in c.get("/events").json()["items"]]
        c.delete(f"/events/{ids[0]}")
    human = orz_db("polar", "reconcile", "--period", span, "--org", str(org_id), env=env)
    assert human.exit_code == 0, human.output
    assert "local only" in human.output and "lost" in human.output
    assert "drift: 1 minute(s) differ" in human.output
    out = orz_db("polar", "reconcile", "--period", span, "--json", env=env)
    view = json.loads(out.stdout)
    assert view["totals"]["matched"]["count"] == 2 and view["drift_minutes"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "someday"], "use current, previous or START..END"),
        (["--org", "acme"], "is not an org id"),
    ],
)
def test_reconcile_refuses_bad_options_in_one_line(
    orz_db: Invoke, args: list[str], message: str
) -> None:
    result = orz_db("polar", "reconcile", *args, env={"POLAR_API_KEY": TOKEN})
    assert result.exit_code == 1 and message in result.output


def test_reconcile_says_when_polar_cannot_be_read(runtime: Runtime, orz_db: Invoke) -> None:
    make_records(runtime, 1)
    env = {"POLAR_API_URL": "http://127.0.0.1:9", "POLAR_API_KEY": TOKEN}
    period = ["--period", "2026-03-01..2026-04-01"]
    result = orz_db("polar", "reconcile", *period, "--attempts", "1", env=env)
    assert result.exit_code == 2 and "Polar could not be read" in result.output
