"""The single heartbeat's SQL prefilter (`throttle_repository.quiet_beat`, which lets a beat
be written in one statement without a cap check) must never pass a beat that
`heartbeat_cut`'s Python prefilter would check: over random orgs and instances, whenever the
SQL condition holds, the instance's own caps are not due and no org cap is near. PostgreSQL
only, as the one-statement beat is."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.instances.models import Instance, State
from orzbob.metering.models import UsageSegment
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup
from orzbob.runtime import Runtime
from orzbob.throttle.service import own_cuts, throttle_service
from tests.conftest import T0

NOW = T0 + timedelta(days=3, hours=5, minutes=17, seconds=23)


@pytest.fixture(autouse=True)
def _postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("the one-statement heartbeat is PostgreSQL's")


def _state() -> st.SearchStrategy[dict[str, object]]:
    # Minutes and counts spread widely, and as often close to each plan's limits (idle after
    # 30 or 60 minutes, an 8-hour run, 1,440 instance-minutes a day, a 600-minute allowance,
    # each with the prefilter's margin), where a wrong comparison or margin would show.
    def near(*limits: int) -> st.SearchStrategy[int]:
        return st.sampled_from(limits).flatmap(
            lambda at: st.integers(min_value=max(at - 30, 0), max_value=at + 2)
        )

    minutes = st.integers(min_value=0, max_value=26 * 60) | near(30, 60, 480)
    return st.fixed_dictionaries(
        {
            "plan": st.sampled_from(["free-tier", "base-plus-usage", "usage-only"]),
            # Small limits too, where a bound on the bill (a base of up to $20, a few hours
            # of billable use, the margin at up to $2.08 an hour) crosses them.
            "spend_limit_cents": st.none()
            | st.integers(min_value=0, max_value=10**6)
            | st.integers(min_value=0, max_value=6000),
            # Billable minutes this period by tier (with the period row), and how long ago
            # the org's least recently counted open segment was counted (None: none open).
            "billable": st.dictionaries(
                st.sampled_from(["small", "medium", "large", "gpu"]),
                st.integers(min_value=0, max_value=3000),
                max_size=4,
            ),
            "counted_ago": st.none() | st.integers(min_value=0, max_value=240),
            # The beaten instance: minutes since its run started (None: since its last state
            # change) and since its last activity.
            "run_started": st.none() | minutes,
            "state_changed": minutes,
            "active": minutes,
            "others": st.integers(min_value=0, max_value=4),
            "other_states": st.lists(
                st.sampled_from([State.RUNNING, State.PAUSED, State.STOPPED]),
                min_size=4,
                max_size=4,
            ),
            "used": st.none() | st.integers(min_value=0, max_value=2000) | near(600),
            "today": st.none() | st.integers(min_value=0, max_value=1500) | near(1440),
            "period_now": st.booleans(),
        }
    )


def _instance(
    org_id: uuid.UUID, state: State, started: int | None, changed: int, active: int
) -> Instance:
    return Instance(
        id=uuid.uuid4(),
        org_id=org_id,
        name="i",
        tier="small",
        state=state.value,
        created_at=NOW - timedelta(days=2),
        state_changed_at=NOW - timedelta(minutes=changed),
        run_started_at=None if started is None else NOW - timedelta(minutes=started),
        last_seen_at=NOW - timedelta(seconds=30),
        last_active_at=NOW - timedelta(minutes=active),
        stopped_at=NOW if state == State.STOPPED else None,
    )


def _judge(runtime: Runtime, state: dict[str, object]) -> tuple[bool, bool, bool]:
    """(the SQL condition holds, an own cap is due, an org cap is near) for this state, built
    in a transaction that is rolled back."""
    catalog = runtime.catalog
    with runtime.sessions() as s:
        org = account_service.create_org(
            s,
            name="prop",
            billing_emails=["p@prop.test"],
            plan_id=str(state["plan"]),
            catalog=catalog,
            now=NOW - timedelta(days=3),
        )
        org.spend_limit_cents = state["spend_limit_cents"]  # type: ignore[assignment]
        beaten = _instance(
            org.id,
            State.RUNNING,
            state["run_started"],  # type: ignore[arg-type]
            state["state_changed"],  # type: ignore[arg-type]
            state["active"],  # type: ignore[arg-type]
        )
        s.add(beaten)
        others = state["other_states"][: state["others"]]  # type: ignore[index]
        for k, other_state in enumerate(others):
            s.add(_instance(org.id, other_state, 10 * k, 10 * k, k))
        if state["used"] is not None:
            start = NOW - timedelta(days=1) if state["period_now"] else NOW - timedelta(days=40)
            s.add(
                QuotaPeriod(
                    org_id=org.id,
                    period_start=start,
                    period_end=start + timedelta(days=30),
                    used_small_minutes=state["used"],
                )
            )
            for tier, minutes in state["billable"].items():  # type: ignore[attr-defined]
                s.add(
                    QuotaTierRollup(
                        org_id=org.id,
                        period_start=start,
                        tier=tier,
                        minutes=minutes,
                        included_minutes=0,
                        overage_minutes=minutes,
                        billable_minutes=minutes,
                        small_minutes=minutes,
                    )
                )
        if state["counted_ago"] is not None:
            s.add(
                UsageSegment(
                    org_id=org.id,
                    instance_id=beaten.id,
                    tier="small",
                    started_at=NOW - timedelta(days=1),
                    ended_at=None,
                    emitted_minutes=0,
                    counted_until=NOW - timedelta(minutes=state["counted_ago"], seconds=7),  # type: ignore[arg-type]
                )
            )
        if state["today"] is not None:
            s.add(DailyUsage(org_id=org.id, day=NOW.date(), minutes=state["today"]))
            s.add(DailyUsage(org_id=org.id, day=NOW.date() - timedelta(days=1), minutes=1440))
        s.flush()

        clause, params = throttle_service.quiet_beat(catalog, NOW)
        quiet = s.execute(
            select(clause)
            .select_from(Instance)
            .join(Org, Org.id == Instance.org_id)
            .where(Instance.id == beaten.id),
            params,
        ).scalar_one()

        plan = catalog.plan(org.plan_id)
        due = any(at <= NOW for at, _ in own_cuts(beaten, plan))
        near = throttle_service._org_cap_near(s, org, plan, catalog, NOW)
        s.rollback()
    return bool(quiet), due, near


@pytest.mark.postgres_only
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(state=_state())
def test_the_sql_prefilter_never_passes_a_beat_the_python_prefilter_would_check(
    runtime: Runtime, state: dict[str, object]
) -> None:
    quiet, due, near = _judge(runtime, state)
    if quiet:
        assert not due and not near, (state, due, near)


QUIET: dict[str, object] = {
    "plan": "base-plus-usage",
    "spend_limit_cents": None,
    "run_started": 60,
    "state_changed": 60,
    "active": 1,
    "others": 1,
    "other_states": [State.PAUSED] * 4,
    "used": 10,
    "today": 10,
    "period_now": True,
    "billable": {},
    "counted_ago": None,
}


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("change", "quiet", "checked"),
    [
        ({}, True, False),
        ({"active": 25 * 60}, False, True),  # idle past the timeout
        ({"run_started": 25 * 60}, False, True),  # past the continuous-run cap
        ({"today": 1439}, False, True),  # the daily cap within the margin
        # A spend limit far above a bound on the bill: quiet; within reach: the full way.
        ({"spend_limit_cents": 10**6}, True, False),
        ({"spend_limit_cents": 2000}, False, True),  # the $20 base alone reaches it
        ({"plan": "free-tier", "used": 590}, False, True),  # the free allowance within the margin
    ],
)
def test_the_property_is_not_vacuous(
    runtime: Runtime, change: dict[str, object], quiet: bool, checked: bool
) -> None:
    got, due, near = _judge(runtime, {**QUIET, **change})
    assert got is quiet
    assert (due or near) is checked
