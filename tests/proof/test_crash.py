"""The crash and chaos proofs at CI size (PostgreSQL only: they kill processes sharing one
database and cut its connections). `make proof` runs them at full size."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.conftest import soak_scale
from tests.proof.crash import Size, run, table


@pytest.fixture(autouse=True)
def _postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("kill -9 and pg_terminate_backend need PostgreSQL")


def ci_size(chaos: float, processes: int) -> Size:
    scale = soak_scale()
    return Size(
        instances=max(20, int(200 * scale)),
        orgs=max(4, int(20 * scale)),
        kills=max(2, int(12 * scale)),
        cuts=max(1, int(6 * scale)),
        chaos=chaos,
        apis=processes,
        workers=processes,
    )


@pytest.mark.soak
@pytest.mark.parametrize(
    ("chaos", "processes"), [(0.0, 1), (0.3, 1), (0.0, 2)], ids=["crash", "chaos", "2+2"]
)
def test_no_minute_is_lost_or_billed_twice_across_kills_and_cuts(
    db_url: str, tmp_path: Path, chaos: float, processes: int
) -> None:
    seed = int(os.environ.get("ORZBOB_PROOF_SEED") or random.SystemRandom().randrange(10**6))
    outcome = run(ci_size(chaos, processes), seed=seed, admin_url=db_url, workdir=tmp_path)
    print(table([outcome]))
    assert outcome.totals is not None and outcome.totals.ledger > 0
    assert outcome.killed  # (the faults fired are in the table: few Polar calls at CI size)
    assert outcome.problems == [], f"seed {seed}: {outcome.problems}"
