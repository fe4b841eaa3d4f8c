"""Every query on budget alerts."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from orzbob.alerts.models import AlertState, BudgetAlert
from orzbob.kit.db import pairs_in

PeriodKey = tuple[uuid.UUID, datetime]
ThresholdKey = tuple[str, int]


class AlertRepository:
    def by_period(
        self, session: Session, keys: Iterable[PeriodKey]
    ) -> dict[PeriodKey, dict[ThresholdKey, BudgetAlert]]:
        """Every alert row of each (org, period start), keyed by (kind, threshold)."""
        wanted = sorted(set(keys))
        out: dict[PeriodKey, dict[ThresholdKey, BudgetAlert]] = defaultdict(dict)
        if not wanted:
            return out
        rows = session.scalars(
            select(BudgetAlert)
            .where(pairs_in(session, (BudgetAlert.org_id, BudgetAlert.period_start), wanted))
            .execution_options(populate_existing=True)
        )
        for row in rows:
            out[(row.org_id, row.period_start)][(row.kind, row.threshold)] = row
        return out

    def list_for_org(
        self, session: Session, org_id: uuid.UUID, *, period_start: datetime | None, limit: int
    ) -> Sequence[BudgetAlert]:
        stmt = select(BudgetAlert).where(BudgetAlert.org_id == org_id)
        if period_start is not None:
            stmt = stmt.where(BudgetAlert.period_start == period_start)
        stmt = stmt.order_by(
            BudgetAlert.period_start.desc(),
            BudgetAlert.created_at.desc(),
            BudgetAlert.threshold.desc(),
        )
        return session.scalars(stmt.limit(limit)).all()

    def last_for_period(
        self, session: Session, org_id: uuid.UUID, period_start: datetime
    ) -> BudgetAlert | None:
        return session.scalars(
            select(BudgetAlert)
            .where(
                BudgetAlert.org_id == org_id,
                BudgetAlert.period_start == period_start,
                BudgetAlert.state != AlertState.REARMED.value,
            )
            .order_by(BudgetAlert.created_at.desc(), BudgetAlert.threshold.desc())
            .limit(1)
        ).first()

    def get(
        self, session: Session, alert_id: uuid.UUID, *, lock: bool = False
    ) -> BudgetAlert | None:
        stmt = select(BudgetAlert).where(BudgetAlert.id == alert_id)
        if lock:
            stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
        return session.scalars(stmt).one_or_none()

    def claimable(
        self, session: Session, *, now: datetime, real_now: datetime, limit: int
    ) -> Sequence[BudgetAlert]:
        """Pending alerts due now whose lease (if any) has run out, locked; rows another
        sender is claiming right now are skipped rather than waited for."""
        return session.scalars(
            select(BudgetAlert)
            .where(
                BudgetAlert.state == AlertState.PENDING.value,
                BudgetAlert.next_attempt_at <= now,
                or_(
                    BudgetAlert.claim_expires_at.is_(None), BudgetAlert.claim_expires_at < real_now
                ),
            )
            .order_by(BudgetAlert.next_attempt_at, BudgetAlert.id)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        ).all()

    def finish_claim(
        self,
        session: Session,
        alert_id: uuid.UUID,
        *,
        worker: str,
        generation: int,
        values: dict[str, Any],
    ) -> bool:
        """Record a delivery outcome, only if this worker still holds this generation's
        claim (a re-arm or an expired lease taken over by another sender means it lost it)."""
        result = session.execute(
            update(BudgetAlert)
            .where(
                BudgetAlert.id == alert_id,
                BudgetAlert.claimed_by == worker,
                BudgetAlert.generation == generation,
                BudgetAlert.state == AlertState.PENDING.value,
            )
            .values(claimed_by=None, claim_expires_at=None, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def renew_claim(
        self,
        session: Session,
        alert_id: uuid.UUID,
        *,
        worker: str,
        generation: int,
        until: datetime,
    ) -> bool:
        result = session.execute(
            update(BudgetAlert)
            .where(
                BudgetAlert.id == alert_id,
                BudgetAlert.claimed_by == worker,
                BudgetAlert.generation == generation,
                BudgetAlert.state == AlertState.PENDING.value,
            )
            .values(claim_expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def renew_claims(
        self, session: Session, ids: Sequence[uuid.UUID], *, worker: str, until: datetime
    ) -> int:
        """Extend this worker's leases on a batch in flight (rows it lost are left alone)."""
        result = session.execute(
            update(BudgetAlert)
            .where(
                BudgetAlert.id.in_(ids),
                BudgetAlert.claimed_by == worker,
                BudgetAlert.state == AlertState.PENDING.value,
            )
            .values(claim_expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def release_claims(self, session: Session, *, worker: str) -> int:
        """Drop every claim this worker holds on a pending alert (it died holding them)."""
        result = session.execute(
            update(BudgetAlert)
            .where(
                BudgetAlert.claimed_by == worker,
                BudgetAlert.state == AlertState.PENDING.value,
            )
            .values(claimed_by=None, claim_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def unsent(self, session: Session) -> tuple[int, datetime | None]:
        count, oldest = session.execute(
            select(func.count(), func.min(BudgetAlert.created_at)).where(
                BudgetAlert.state == AlertState.PENDING.value
            )
        ).one()
        return int(count or 0), oldest

    def next_attempt(self, session: Session) -> datetime | None:
        return session.scalar(
            select(func.min(BudgetAlert.next_attempt_at)).where(
                BudgetAlert.state == AlertState.PENDING.value
            )
        )


alert_repository = AlertRepository()
