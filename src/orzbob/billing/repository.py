"""The billing read model's one composed query.

GET /v1/billing is the hottest read: it used to cost eight statements, most of them
answering "is there anything?" with "no" (no grants, no alert, no open run). One statement
of scalar subqueries reads the single-valued facts and counts the rest, so only what an org
really has is read after it. A read model reads the tables of the domains it composes; the
domains' own services still own every write and every rule.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, Select, and_, bindparam, func, literal, select

from orzbob.accounts.models import ORG_ROW_COLUMNS, ApiToken, Org, OrgRow
from orzbob.alerts.models import AlertState, BudgetAlert
from orzbob.credits.models import CreditGrant
from orzbob.instances.models import Instance, InstanceFacts
from orzbob.kit.db import Reader, StatementConnection
from orzbob.metering.models import SegmentFacts, UsageSegment
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup


@dataclass(frozen=True)
class BillingSnapshot:
    used_small_minutes: int
    exhausted_at: datetime | None
    today_minutes: int
    # tier -> (minutes, included, overage, billable, small-minutes), as quota_service.rollups
    rollups: dict[str, tuple[int, int, int, int, int]]
    grants: int  # how many credit grants up to now
    open_runs: int  # open usage segments
    has_alert: bool  # a budget alert in force this period


_ORG: BindParameter[uuid.UUID] = bindparam("org_id")
_PERIOD = bindparam("period_start", type_=QuotaPeriod.period_start.type)
_NOW = bindparam("now", type_=CreditGrant.created_at.type)
_TODAY = bindparam("today", type_=DailyUsage.day.type)


_ONE = select(literal(1).label("one")).subquery("one")


def _period(column: Any) -> Any:
    return (
        select(column)
        .where(QuotaPeriod.org_id == _ORG, QuotaPeriod.period_start == _PERIOD)
        .scalar_subquery()
    )


# Built once: constructing a statement of seven subqueries costs more than running it. One
# row per tier rollup of the period (one row with no tier when it has none): the subqueries'
# single values repeat on each.
_SNAPSHOT = (
    select(
        QuotaTierRollup.tier,
        QuotaTierRollup.minutes,
        QuotaTierRollup.included_minutes,
        QuotaTierRollup.overage_minutes,
        QuotaTierRollup.billable_minutes,
        QuotaTierRollup.small_minutes,
        _period(QuotaPeriod.used_small_minutes),
        _period(QuotaPeriod.exhausted_at),
        select(DailyUsage.minutes)
        .where(DailyUsage.org_id == _ORG, DailyUsage.day == _TODAY)
        .scalar_subquery(),
        select(func.count())
        .select_from(CreditGrant)
        .where(CreditGrant.org_id == _ORG, CreditGrant.created_at <= _NOW)
        .scalar_subquery(),
        select(func.count())
        .select_from(UsageSegment)
        .where(UsageSegment.org_id == _ORG, UsageSegment.ended_at.is_(None))
        .scalar_subquery(),
        select(func.count())
        .select_from(BudgetAlert)
        .where(
            BudgetAlert.org_id == _ORG,
            BudgetAlert.period_start == _PERIOD,
            BudgetAlert.state != AlertState.REARMED.value,
        )
        .scalar_subquery(),
    )
    # A one-row anchor: the head has read the org already.
    .select_from(
        _ONE.outerjoin(
            QuotaTierRollup.__table__,
            and_(QuotaTierRollup.org_id == _ORG, QuotaTierRollup.period_start == _PERIOD),
        )
    )
)


# The head of a read: the org with its open runs (each an open usage segment and its
# instance, in ledger order), and for a token the cache does not know, the token too. One
# statement instead of authentication, the org and the open runs each on their own. Plain
# columns, only those the read uses, into plain rows: loading them as ORM entities cost more
# than the rest of the statement.
@dataclass(frozen=True, slots=True)
class SegmentRow:  # a SegmentFacts
    id: uuid.UUID
    tier: str
    started_at: datetime
    counted_until: datetime
    emitted_minutes: int


@dataclass(frozen=True, slots=True)
class InstanceRow:  # an InstanceFacts
    id: uuid.UUID
    name: str
    state_changed_at: datetime
    run_started_at: datetime | None
    last_active_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRow:
    """The token's columns `account_service.admit` reads, with its org (None for a staff
    token)."""

    id: uuid.UUID
    role: str
    org_id: uuid.UUID | None
    revoked_at: datetime | None
    Org: OrgRow | None


_RUN_COLUMNS = (
    UsageSegment.id,
    UsageSegment.tier,
    UsageSegment.started_at,
    UsageSegment.counted_until,
    UsageSegment.emitted_minutes,
    Instance.id,
    Instance.name,
    Instance.state_changed_at,
    Instance.run_started_at,
    Instance.last_active_at,
)
_TOKEN_COLUMNS = (ApiToken.id, ApiToken.role, ApiToken.org_id, ApiToken.revoked_at)
_RUNS = Org.__table__.outerjoin(
    UsageSegment.__table__, and_(UsageSegment.org_id == Org.id, UsageSegment.ended_at.is_(None))
).outerjoin(Instance.__table__, Instance.id == UsageSegment.instance_id)
_ORG_HEAD = (
    select(*ORG_ROW_COLUMNS, *_RUN_COLUMNS)
    .select_from(_RUNS)
    .where(Org.id == bindparam("org_id"))
    .order_by(UsageSegment.id)
)
_TOKEN_HEAD = (
    select(*_TOKEN_COLUMNS, *ORG_ROW_COLUMNS, *_RUN_COLUMNS)
    .select_from(ApiToken.__table__.outerjoin(_RUNS, Org.id == ApiToken.org_id))
    .where(ApiToken.token_hash == bindparam("token_hash"))
    .order_by(UsageSegment.id)
)

Runs = Sequence[tuple[SegmentFacts, InstanceFacts]]


def _runs(rows: Sequence[Any], at: int) -> Runs:
    """The open runs of the head's rows, whose run columns start at `at`."""
    return [
        (SegmentRow(*r[at : at + 5]), InstanceRow(*r[at + 5 : at + 10]))
        for r in rows
        if r[at] is not None
    ]


def _rows(db: Reader, stmt: Select[*tuple[Any, ...]], params: dict[str, Any]) -> Sequence[Any]:
    if isinstance(db, StatementConnection):
        return db.rows(stmt, params)
    # On the session's connection: columns only, so none of the ORM's execution path.
    return db.connection().execute(stmt, params).all()


class BillingRepository:
    def org_head(self, db: Reader, org_id: uuid.UUID) -> tuple[OrgRow | None, Runs]:
        """The org (None if there is none) and its open runs."""
        rows = _rows(db, _ORG_HEAD, {"org_id": org_id})
        if not rows:
            return None, []
        return OrgRow(*rows[0][:8]), _runs(rows, 8)

    def token_head(self, db: Reader, token_hash: str) -> tuple[TokenRow | None, Runs]:
        """The token (None if unknown) with its org, and the org's open runs."""
        rows = _rows(db, _TOKEN_HEAD, {"token_hash": token_hash})
        if not rows:
            return None, []
        first = rows[0]
        org = OrgRow(*first[4:12]) if first[4] is not None else None
        token_id, role, org_id, revoked_at = first[:4]
        return TokenRow(token_id, role, org_id, revoked_at, org), _runs(rows, 12)

    def snapshot(
        self, db: Reader, org_id: uuid.UUID, period_start: datetime, now: datetime
    ) -> BillingSnapshot:
        rows = _rows(
            db,
            _SNAPSHOT,
            {
                "org_id": org_id,
                "period_start": period_start,
                "now": now,
                "today": now.astimezone(UTC).date(),
            },
        )
        *_, used, exhausted_at, today, grants, runs, alerts = rows[0]
        return BillingSnapshot(
            used_small_minutes=int(used or 0),
            exhausted_at=exhausted_at,
            today_minutes=int(today or 0),
            rollups={
                r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
                for r in rows
                if r[0] is not None
            },
            grants=int(grants or 0),
            open_runs=int(runs or 0),
            has_alert=bool(alerts),
        )


billing_repository = BillingRepository()
