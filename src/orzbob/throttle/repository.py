"""The throttle's read model: the set-based reads its cap checks make across the tables of
instances, metering (open segments), quota (periods, daily rollups) and accounts (plans,
spend limits). Read-only; locks and per-domain reads go through the owning domain
(docs/architecture.md, "Repositories")."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Numeric,
    Select,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.instances.models import Instance, State
from orzbob.kit.db import dialect_name, one_of, planned_for_values
from orzbob.metering.models import UsageSegment
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup


@dataclass(frozen=True)
class SpendBound:
    """What bounds a spend-limited org's bill from above: its plan, its limit, its running
    instances and its billable minutes by tier this period."""

    plan_id: str
    limit_cents: int
    running: int
    billable: dict[str, int]


# Built once (a hot path: every billing read and every cap check of a running org).
_OPEN_RUNS = (
    select(UsageSegment, Instance)
    .join(Instance, Instance.id == UsageSegment.instance_id)
    .where(
        UsageSegment.ended_at.is_(None),
        UsageSegment.org_id.in_(bindparam("org_ids", expanding=True)),
    )
    .order_by(UsageSegment.id)
)
# One org's (the billing read, a single heartbeat): no expanding list to render per call.
_OPEN_RUNS_OF_ORG = (
    select(UsageSegment, Instance)
    .join(Instance, Instance.id == UsageSegment.instance_id)
    .where(UsageSegment.ended_at.is_(None), UsageSegment.org_id == bindparam("org_id"))
    .order_by(UsageSegment.id)
)


_ORG: BindParameter[uuid.UUID] = bindparam("org_id")
_NOW = bindparam("now", type_=QuotaPeriod.period_start.type)
# The heartbeat's prefilter, built once.
_ORG_SNAPSHOT = select(
    select(func.count())
    .where(Instance.org_id == _ORG, Instance.state == State.RUNNING.value)
    .scalar_subquery(),
    select(QuotaPeriod.used_small_minutes)
    .where(
        QuotaPeriod.org_id == _ORG, QuotaPeriod.period_start <= _NOW, QuotaPeriod.period_end > _NOW
    )
    .limit(1)
    .scalar_subquery(),
    select(DailyUsage.minutes)
    .where(
        DailyUsage.org_id == _ORG, DailyUsage.day == bindparam("today", type_=DailyUsage.day.type)
    )
    .scalar_subquery(),
)


@functools.lru_cache(maxsize=32)
def _sweep_statement(catalog: Catalog, scoped: bool, postgres: bool) -> Select[tuple[uuid.UUID]]:
    """The sweep's candidate query for one catalog, built once: every value that changes
    with the clock is a bound parameter (`now`, `today`, `margin`, and each plan's idle and
    continuous-run thresholds as `idle_<i>`, `run_<i>`), so a sweep or a checkpoint batch
    pays no statement construction. `scoped` limits it to `org_ids`."""
    columns: list[ColumnElement[Any]] = [
        Instance.org_id.label("org_id"),
        func.count().label("n"),
        func.min(Instance.last_active_at).label("active"),
        func.min(Instance.run_started_at).label("started"),
    ]
    if not scoped:
        # The fleet's sweep, whose margin assumes the checkpoint keeps up: how far back each
        # org's usage is counted, from its least recently checkpointed open segment (a
        # running instance has one, found by its unique open-segment index) among those with
        # time to count, seen since; one counted up to its instance's last beat (a silent
        # agent, soon stopped) has nothing more to add. Scoped callers (the checkpoint's
        # limiter, bulk beats) take a margin as wide as their orgs' oldest uncounted stretch.
        columns.append(
            func.min(
                case(
                    (Instance.last_seen_at > UsageSegment.counted_until, UsageSegment.counted_until)
                )
            ).label("counted")
        )
    grouped = (
        select(*columns).where(Instance.state == State.RUNNING.value).group_by(Instance.org_id)
    )
    if not scoped:
        grouped = grouped.outerjoin(
            UsageSegment,
            and_(UsageSegment.instance_id == Instance.id, UsageSegment.ended_at.is_(None)),
        )

    def scope(column: Any) -> ColumnElement[bool]:
        # On PostgreSQL, as an index condition of each joined table too (see below).
        return column == any_(bindparam("org_ids", type_=ARRAY(Instance.org_id.type)))

    if scoped:
        grouped = grouped.where(
            scope(Instance.org_id)
            if postgres
            else Instance.org_id.in_(bindparam("org_ids", expanding=True))
        )
    running = grouped.subquery()

    def joined_scope(column: Any) -> ColumnElement[bool]:
        return scope(column) if scoped and postgres else true()

    now = bindparam("now", type_=QuotaPeriod.period_start.type)
    margin = bindparam("margin", type_=Integer())
    used = func.coalesce(QuotaPeriod.used_small_minutes, 0)
    today = func.coalesce(DailyUsage.minutes, 0)
    # Any tier, not just the plan's: an instance started under an earlier plan may still run.
    heaviest = max(t.small_hour_weight for t in catalog.tiers)
    candidate: list[ColumnElement[bool]] = []
    for i, plan in enumerate(catalog.plans):
        reasons = [
            running.c.active <= bindparam(f"idle_{i}", type_=Instance.last_active_at.type),
            running.c.started <= bindparam(f"run_{i}", type_=Instance.run_started_at.type),
            today + running.c.n * margin >= plan.daily_cap_instance_hours * 60,
        ]
        if plan.after_allowance == "hard_stop" and plan.included_small_minutes > 0:
            reasons.append(used + running.c.n * heaviest * margin >= plan.included_small_minutes)
        candidate.append(and_(Org.plan_id == plan.id, or_(*reasons)))
    # The sweep's margin covers the usage not counted yet only while the checkpoint keeps up:
    # an org with usage to count since `margin` minutes ago or earlier (a stalled or failing
    # checkpoint) may have run past any cap that counts usage, so it is a candidate.
    if not scoped:
        stale = running.c.counted <= bindparam("stale", type_=UsageSegment.counted_until.type)
        candidate.insert(0, stale)
    # Scoped, each joined table is also limited to `org_ids` on its own key (the same rows:
    # the join is on the org): an index condition, where the join alone hashed the whole of
    # orgs and quota_periods for every checkpoint batch.
    return (
        select(running.c.org_id)
        .join(Org, and_(Org.id == running.c.org_id, joined_scope(Org.id)))
        .outerjoin(
            QuotaPeriod,
            and_(
                QuotaPeriod.org_id == running.c.org_id,
                joined_scope(QuotaPeriod.org_id),
                QuotaPeriod.period_start <= now,
                QuotaPeriod.period_end > now,
            ),
        )
        .outerjoin(
            DailyUsage,
            and_(
                DailyUsage.org_id == running.c.org_id,
                joined_scope(DailyUsage.org_id),
                DailyUsage.day == bindparam("today", type_=DailyUsage.day.type),
            ),
        )
        .where(or_(*candidate))
        .order_by(running.c.org_id)
    )


def _clock_params(catalog: Catalog, now: datetime, margin_minutes: int) -> dict[str, object]:
    """The bound values of the sweep's statement (`_sweep_statement`) at `now`: the clock,
    today, the margin, and each plan's idle and continuous-run thresholds."""
    return _params_at(_plan_offsets(catalog, ""), "", now, margin_minutes)


def _params_at(
    offsets: tuple[tuple[str, timedelta], ...], prefix: str, now: datetime, margin_minutes: int
) -> dict[str, object]:
    params: dict[str, object] = {
        f"{prefix}now": now,
        f"{prefix}today": now.date(),
        f"{prefix}margin": margin_minutes,
    }
    for name, back in offsets:
        params[name] = now - back
    return params


def _plan_offsets(catalog: Catalog, prefix: str) -> tuple[tuple[str, timedelta], ...]:
    """Each plan's idle and continuous-run thresholds as (parameter, time before now): a
    loop over a few plans, cheaper than an `lru_cache` lookup that hashes the catalog."""
    offsets: list[tuple[str, timedelta]] = []
    for i, plan in enumerate(catalog.plans):
        offsets.append((f"{prefix}idle_{i}", timedelta(minutes=plan.idle_timeout_minutes)))
        offsets.append((f"{prefix}run_{i}", timedelta(hours=plan.continuous_cap_hours)))
    return tuple(offsets)


# The quiet condition and its thresholds by catalog object, for the heartbeat: found by
# identity, since `lru_cache` hashes a frozen pydantic catalog field by field, every plan and
# tier, on each call, which cost a beat more than building its parameters. The catalog is
# kept beside them, so its id is not reused while it is here.
_QUIET_BY_CATALOG: dict[
    int, tuple[Catalog, ColumnElement[bool], tuple[tuple[str, timedelta], ...]]
] = {}


def _quiet_of(catalog: Catalog) -> tuple[ColumnElement[bool], tuple[tuple[str, timedelta], ...]]:
    known = _QUIET_BY_CATALOG.get(id(catalog))
    if known is None or known[0] is not catalog:
        if len(_QUIET_BY_CATALOG) >= 32:
            _QUIET_BY_CATALOG.clear()
        known = (catalog, _quiet_beat(catalog), _plan_offsets(catalog, "q_"))
        _QUIET_BY_CATALOG[id(catalog)] = known
    return known[1], known[2]


@functools.lru_cache(maxsize=32)
def _quiet_beat(catalog: Catalog) -> ColumnElement[bool]:
    """The heartbeat prefilter (`ThrottleService.heartbeat_cut`) as one SQL condition on the
    beaten instance (`instances`) and its org (`orgs`), built once per catalog: true only
    when neither the instance's own caps nor, by the sweep's rule with the heartbeat's
    margin, its org's caps can have been reached. Values that move with the clock are bound
    parameters (`quiet_params`)."""
    others = aliased(Instance)
    n = (
        select(func.count())
        .select_from(others)
        .where(others.org_id == Instance.org_id, others.state == State.RUNNING.value)
        .scalar_subquery()
    )
    now = bindparam("q_now", type_=QuotaPeriod.period_start.type)
    used = func.coalesce(
        select(QuotaPeriod.used_small_minutes)
        .where(
            QuotaPeriod.org_id == Instance.org_id,
            QuotaPeriod.period_start <= now,
            QuotaPeriod.period_end > now,
        )
        .limit(1)
        .scalar_subquery(),
        0,
    )
    today = func.coalesce(
        select(DailyUsage.minutes)
        .where(
            DailyUsage.org_id == Instance.org_id,
            DailyUsage.day == bindparam("q_today", type_=DailyUsage.day.type),
        )
        .scalar_subquery(),
        0,
    )
    margin = n * bindparam("q_margin", type_=Integer())
    # Any tier, not just the plan's: an instance started under an earlier plan may still run.
    heaviest = max(t.small_hour_weight for t in catalog.tiers)
    started = func.coalesce(Instance.run_started_at, Instance.state_changed_at)
    per_plan = []
    for i, plan in enumerate(catalog.plans):
        quiet = [
            Org.plan_id == plan.id,
            Instance.last_active_at > bindparam(f"q_idle_{i}", type_=Instance.last_active_at.type),
            started > bindparam(f"q_run_{i}", type_=Instance.state_changed_at.type),
            today + margin < plan.daily_cap_instance_hours * 60,
        ]
        if plan.after_allowance == "hard_stop" and plan.included_small_minutes > 0:
            quiet.append(used + margin * heaviest < plan.included_small_minutes)
        per_plan.append(and_(*quiet))
    return and_(
        or_(Org.spend_limit_cents.is_(None), _far_from_spend_limit(catalog, n, now)), or_(*per_plan)
    )


# An org's tier rollups with their period row: a spend bound reads the current period's.
_PERIOD_ROLLUPS = QuotaTierRollup.__table__.join(
    QuotaPeriod.__table__,
    and_(
        QuotaPeriod.org_id == QuotaTierRollup.org_id,
        QuotaPeriod.period_start == QuotaTierRollup.period_start,
    ),
)


def _far_from_spend_limit(
    catalog: Catalog, n: ColumnElement[int], now: BindParameter[datetime]
) -> ColumnElement[bool]:
    """`ThrottleService._near_spend_limit` for the beaten instance's org, negated, as SQL: its
    bill bounded from above stays under its limit. Each term is at least the Python bound's
    (exact costs plus 2 cents where Python rounds and adds 1), so the condition never holds
    where Python would find the limit near."""
    top = max(t.hourly_rate for t in catalog.tiers)
    cent2 = literal(Decimal("0.02"), Numeric())
    # An unknown tier or plan counts at the dearest rate or base.
    rate = case({t.id: t.hourly_rate for t in catalog.tiers}, value=QuotaTierRollup.tier, else_=top)
    base = case(
        {p.id: p.monthly_base for p in catalog.plans},
        value=Org.plan_id,
        else_=max(p.monthly_base for p in catalog.plans),
    )
    billable = (
        select(func.coalesce(func.sum(QuotaTierRollup.billable_minutes * rate / 60 + cent2), 0))
        .select_from(_PERIOD_ROLLUPS)
        .where(
            QuotaTierRollup.org_id == Instance.org_id,
            QuotaPeriod.period_start <= now,
            QuotaPeriod.period_end > now,
        )
        .scalar_subquery()
    )
    # Minutes not counted yet: since the org's least recently counted open segment, rounded
    # up, plus one; the heartbeat's margin at least (`ThrottleService._uncounted_margin`).
    oldest = (
        select(func.min(UsageSegment.counted_until))
        .where(UsageSegment.org_id == Instance.org_id, UsageSegment.ended_at.is_(None))
        .scalar_subquery()
    )
    uncounted = func.ceil(func.extract("epoch", now - oldest) / 60) + 1
    margin = func.greatest(bindparam("q_margin", type_=Integer()), func.coalesce(uncounted, 0))
    bound = base + billable + n * margin * top / 60 + cent2
    return bound * 100 < Org.spend_limit_cents


class ThrottleRepository:
    def open_runs(
        self, session: Session, org_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, list[tuple[UsageSegment, Instance]]]:
        """Every open segment of these orgs with its instance, in segment order (the order
        the ledger allocates them in)."""
        ids = sorted(set(org_ids))
        out: dict[uuid.UUID, list[tuple[UsageSegment, Instance]]] = defaultdict(list)
        if not ids:
            return out
        if len(ids) == 1:
            rows = session.execute(_OPEN_RUNS_OF_ORG, {"org_id": ids[0]}).all()
        else:
            rows = session.execute(_OPEN_RUNS, {"org_ids": ids}).all()
        for seg, inst in rows:
            out[seg.org_id].append((seg, inst))
        return out

    def sweep_candidates(
        self,
        session: Session,
        *,
        catalog: Catalog,
        now: datetime,
        margin_minutes: int,
        org_ids: Sequence[uuid.UUID] | None = None,
        custom_plan: bool = False,
    ) -> list[uuid.UUID]:
        """Orgs with a running instance that a plan's cap may stop now, in one set-based query.

        Per-instance caps compare the org's stalest activity and oldest run with each plan's
        limits; org caps compare the rollups, plus what `margin_minutes` of every running
        instance could add, with the budgets. Spend limits are not judged here: the caller
        bounds a spend-limited org's bill from `spend_bounds`. The exact moment is computed
        per org after.

        `custom_plan` (PostgreSQL): plan this call for its own values (`planned_for_values`).
        Once psycopg prepares the statement, PostgreSQL soon settles on a generic plan, which
        cannot see how few orgs `org_ids` holds: for the orgs of a batch of beats it took 14 ms
        where a plan for the values takes 1.5 ms, and 12 ms against 4.5 ms for a checkpoint
        batch's orgs."""
        postgres = dialect_name(session) == "postgresql"
        stmt = _sweep_statement(catalog, org_ids is not None, postgres)
        params = _clock_params(catalog, now, margin_minutes)
        if org_ids is not None:
            params["org_ids"] = list(org_ids)
        else:  # the fleet's sweep: how far back an org's usage may be counted for the margin
            params["stale"] = now - timedelta(minutes=margin_minutes)
        with planned_for_values(session) if custom_plan else nullcontext():
            return list(dict.fromkeys(session.scalars(stmt, params)))

    def org_snapshot(
        self, session: Session, org_id: uuid.UUID, now: datetime
    ) -> tuple[int, int, int]:
        """(running instances, allowance used this period, instance-minutes today) in one
        small statement: the heartbeat's prefilter."""
        n, u, t = session.execute(
            _ORG_SNAPSHOT, {"org_id": org_id, "now": now, "today": now.date()}
        ).one()
        return int(n or 0), int(u or 0), int(t or 0)

    def quiet_beat(
        self, catalog: Catalog, now: datetime, margin_minutes: int
    ) -> tuple[ColumnElement[bool], dict[str, object]]:
        """`_quiet_beat` for this catalog, with its parameters at `now`."""
        clause, offsets = _quiet_of(catalog)
        return clause, _params_at(offsets, "q_", now, margin_minutes)

    def oldest_counted(self, session: Session, org_ids: Sequence[uuid.UUID]) -> datetime | None:
        """How far back the least recently counted open segment of these orgs is counted."""
        return session.scalar(
            select(func.min(UsageSegment.counted_until)).where(
                one_of(session, UsageSegment.org_id, list(org_ids)),
                UsageSegment.ended_at.is_(None),
            )
        )

    def spend_bounds(
        self, session: Session, org_ids: Sequence[uuid.UUID] | None, now: datetime
    ) -> dict[uuid.UUID, SpendBound]:
        """For orgs with a spend limit and a running instance (of `org_ids`, or every such org
        if None): the inputs of a cheap upper bound on their bill, in two statements."""
        # From the orgs to their running instances: the orgs' key is the only index condition
        # (one on the instances too made PostgreSQL scan them first: 27 ms, not 2.5, for the
        # 500 orgs of a batch of beats).
        running = (
            select(Org.id, Org.plan_id, Org.spend_limit_cents, func.count())
            .join(
                Instance,
                and_(Instance.org_id == Org.id, Instance.state == State.RUNNING.value),
            )
            .where(Org.spend_limit_cents.is_not(None))
            .group_by(Org.id, Org.plan_id, Org.spend_limit_cents)
        )
        if org_ids is not None:
            running = running.where(one_of(session, Org.id, list(org_ids)))
        out = {
            org_id: SpendBound(plan_id, int(limit or 0), int(n), {})  # never null: filtered
            for org_id, plan_id, limit, n in session.execute(running)
        }
        if not out:
            return out
        rows = session.execute(
            select(QuotaTierRollup.org_id, QuotaTierRollup.tier, QuotaTierRollup.billable_minutes)
            .select_from(_PERIOD_ROLLUPS)
            .where(
                one_of(session, QuotaTierRollup.org_id, list(out)),
                # The same orgs (the join is on the org): the periods' index condition.
                one_of(session, QuotaPeriod.org_id, list(out)),
                QuotaPeriod.period_start <= now,
                QuotaPeriod.period_end > now,
            )
        )
        for org_id, tier, billable in rows:
            out[org_id].billable[tier] = int(billable)
        return out


throttle_repository = ThrottleRepository()
