"""Queries on quota periods and their rollups (the tables `quota` owns)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orzbob.kit.bulk import insert_ignore_pg, update_by_key
from orzbob.kit.db import insert_ignore, one_of, pairs_in, upsert_add
from orzbob.quota.models import DailyUsage, QuotaPeriod, QuotaTierRollup


class QuotaRepository:
    def lock_periods(
        self, session: Session, keys: Iterable[tuple[uuid.UUID, datetime]]
    ) -> dict[tuple[uuid.UUID, datetime], QuotaPeriod]:
        """Lock the period rows of these (org, period start) keys, in key order, for the rest
        of the transaction; by key (a key without a row is absent)."""
        stmt = (
            select(QuotaPeriod)
            .where(pairs_in(session, (QuotaPeriod.org_id, QuotaPeriod.period_start), sorted(keys)))
            .order_by(QuotaPeriod.org_id, QuotaPeriod.period_start)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        return {(qp.org_id, qp.period_start): qp for qp in session.scalars(stmt)}

    def lock_period_values(
        self, session: Session, keys: Iterable[tuple[uuid.UUID, datetime]]
    ) -> dict[tuple[uuid.UUID, datetime], tuple[int, datetime | None, str | None, int | None]]:
        """`lock_periods` as plain values (used small minutes, exhausted at, plan id, monthly
        base in cents) instead of ORM objects: the same locks, taken in the same order."""
        stmt = (
            select(
                QuotaPeriod.org_id,
                QuotaPeriod.period_start,
                QuotaPeriod.used_small_minutes,
                QuotaPeriod.exhausted_at,
                QuotaPeriod.plan_id,
                QuotaPeriod.monthly_base_cents,
            )
            .where(pairs_in(session, (QuotaPeriod.org_id, QuotaPeriod.period_start), sorted(keys)))
            .order_by(QuotaPeriod.org_id, QuotaPeriod.period_start)
            .with_for_update(key_share=True)
        )
        return {
            (org_id, start): (int(used), exhausted_at, plan_id, cents)
            for org_id, start, used, exhausted_at, plan_id, cents in session.execute(stmt)
        }

    def period(
        self, session: Session, org_id: uuid.UUID, period_start: datetime
    ) -> QuotaPeriod | None:
        return session.scalars(
            select(QuotaPeriod).where(
                QuotaPeriod.org_id == org_id, QuotaPeriod.period_start == period_start
            )
        ).one_or_none()

    def tier_rollups(
        self, session: Session, org_id: uuid.UUID, period_start: datetime
    ) -> Sequence[QuotaTierRollup]:
        return session.scalars(
            select(QuotaTierRollup).where(
                QuotaTierRollup.org_id == org_id, QuotaTierRollup.period_start == period_start
            )
        ).all()

    def tier_rollups_of(
        self, session: Session, keys: Sequence[tuple[uuid.UUID, datetime]]
    ) -> list[tuple[uuid.UUID, datetime, str, int, int]]:
        """(org, period start, tier, minutes, billable minutes) of every tier rollup of the
        given (org, period start) keys, in one query."""
        return [
            (org_id, start, tier, int(minutes), int(billable))
            for org_id, start, tier, minutes, billable in session.execute(
                select(
                    QuotaTierRollup.org_id,
                    QuotaTierRollup.period_start,
                    QuotaTierRollup.tier,
                    QuotaTierRollup.minutes,
                    QuotaTierRollup.billable_minutes,
                ).where(
                    pairs_in(session, (QuotaTierRollup.org_id, QuotaTierRollup.period_start), keys)
                )
            )
        ]

    def day_minutes(self, session: Session, org_id: uuid.UUID, day: date) -> int:
        minutes = session.scalar(
            select(DailyUsage.minutes).where(DailyUsage.org_id == org_id, DailyUsage.day == day)
        )
        return int(minutes or 0)

    def days_minutes(
        self, session: Session, org_ids: Iterable[uuid.UUID], first: date, last: date
    ) -> dict[uuid.UUID, dict[date, int]]:
        """Instance-minutes of each UTC day in [first, last] of these orgs, by org and day (an
        org or day without usage is absent)."""
        out: dict[uuid.UUID, dict[date, int]] = defaultdict(dict)
        ids = sorted(set(org_ids))
        if not ids:
            return out
        for org_id, day, minutes in session.execute(
            select(DailyUsage.org_id, DailyUsage.day, DailyUsage.minutes).where(
                one_of(session, DailyUsage.org_id, ids),
                DailyUsage.day >= first,
                DailyUsage.day <= last,
            )
        ):
            out[org_id][day] = int(minutes)
        return out

    def insert_periods(self, session: Session, rows: Sequence[dict[str, Any]]) -> int:
        """Insert period rows, leaving alone (neither changed nor locked) those that exist;
        returns how many were inserted."""
        table = QuotaPeriod.__table__
        inserted = insert_ignore_pg(session, table, rows)  # type: ignore[arg-type]
        return insert_ignore(session, table, rows) if inserted is None else inserted  # type: ignore[arg-type]

    def save_periods(
        self, session: Session, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Write `columns` of locked period rows, one statement for the batch: each row is
        (org_id, period_start, *values in `columns` order)."""
        update_by_key(
            session,
            QuotaPeriod.__table__,  # type: ignore[arg-type]
            ("org_id", "period_start"),
            columns,
            rows,
        )

    def add_to_tier_rollups(self, session: Session, rows: Sequence[dict[str, Any]]) -> None:
        """Add minutes to the per-tier rollups of periods, creating the missing ones (one
        upsert for the batch)."""
        upsert_add(
            session,
            QuotaTierRollup.__table__,  # type: ignore[arg-type]
            ("org_id", "period_start", "tier"),
            rows,
        )

    def add_to_daily_usage(self, session: Session, rows: Sequence[dict[str, Any]]) -> None:
        """Add instance-minutes to each org's UTC day, creating the missing days."""
        upsert_add(
            session,
            DailyUsage.__table__,  # type: ignore[arg-type]
            ("org_id", "day"),
            rows,
        )

    def recorded_bases(
        self, session: Session, org_id: uuid.UUID, *, ending_after: datetime, before: datetime
    ) -> dict[datetime, tuple[str | None, int | None]]:
        """(plan id, monthly base in cents) recorded on each period row that ends after
        `ending_after` and starts before `before`, by period start."""
        return {
            start: (plan_id, cents)
            for start, plan_id, cents in session.execute(
                select(
                    QuotaPeriod.period_start, QuotaPeriod.plan_id, QuotaPeriod.monthly_base_cents
                ).where(
                    QuotaPeriod.org_id == org_id,
                    QuotaPeriod.period_end > ending_after,
                    QuotaPeriod.period_start < before,
                )
            )
        }

    def billable_minutes_by_tier(
        self, session: Session, org_id: uuid.UUID, *, start: datetime, before: datetime
    ) -> list[tuple[datetime, str, int]]:
        """(period start, tier, billable minutes) of every tier rollup starting in
        [start, before)."""
        return [
            (s, tier, int(minutes))
            for s, tier, minutes in session.execute(
                select(
                    QuotaTierRollup.period_start,
                    QuotaTierRollup.tier,
                    QuotaTierRollup.billable_minutes,
                ).where(
                    QuotaTierRollup.org_id == org_id,
                    QuotaTierRollup.period_start >= start,
                    QuotaTierRollup.period_start < before,
                )
            )
        ]

    def minutes_on(self, session: Session, day: date) -> int:
        """Instance-minutes of every org on one UTC day (0 when none)."""
        minutes = session.scalar(
            select(func.coalesce(func.sum(DailyUsage.minutes), 0)).where(DailyUsage.day == day)
        )
        return int(minutes or 0)


quota_repository = QuotaRepository()
