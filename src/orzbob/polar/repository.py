"""Every query on the tables `polar` owns: scheduled plan changes, reconciliation runs and
webhook deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orzbob.kit.db import one_of
from orzbob.kit.repository import Repository
from orzbob.polar.models import ReconcileRun, ScheduledPlanChange, WebhookDelivery


def _waiting() -> tuple[Any, ...]:
    return (
        ScheduledPlanChange.applied_at.is_(None),
        ScheduledPlanChange.canceled_at.is_(None),
    )


class PlanChangeRepository(Repository[ScheduledPlanChange]):
    model = ScheduledPlanChange

    def pending(self, session: Session, org_id: uuid.UUID) -> ScheduledPlanChange | None:
        """The org's change neither applied nor canceled, locked."""
        return session.scalars(
            select(ScheduledPlanChange)
            .where(ScheduledPlanChange.org_id == org_id, *_waiting())
            .with_for_update()
        ).one_or_none()

    def due_org_ids(self, session: Session, *, now: datetime, limit: int) -> list[uuid.UUID]:
        return list(
            session.scalars(
                select(ScheduledPlanChange.org_id)
                .where(*_waiting(), ScheduledPlanChange.effective_at <= now)
                .order_by(ScheduledPlanChange.effective_at)
                .limit(limit)
            )
        )

    def due_at(
        self, session: Session, org_ids: Collection[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, datetime]:
        rows = session.execute(
            select(ScheduledPlanChange.org_id, ScheduledPlanChange.effective_at).where(
                one_of(session, ScheduledPlanChange.org_id, org_ids),
                *_waiting(),
                ScheduledPlanChange.effective_at <= now,
            )
        ).all()
        return {org_id: at for org_id, at in rows}

    def next_due(self, session: Session) -> datetime | None:
        return session.scalar(select(func.min(ScheduledPlanChange.effective_at)).where(*_waiting()))


class ReconcileRunRepository(Repository[ReconcileRun]):
    model = ReconcileRun

    def closed_period_done(
        self, session: Session, org_id: uuid.UUID, window_start: datetime
    ) -> bool:
        """Whether a period-close run of this org's period ended well."""
        done = session.scalar(
            select(func.count())
            .select_from(ReconcileRun)
            .where(
                ReconcileRun.scope == "period_close",
                ReconcileRun.org_id == org_id,
                ReconcileRun.window_start == window_start,
                ReconcileRun.status == "ok",
            )
        )
        return bool(done)

    def latest(self, session: Session, *, org_id: uuid.UUID | None) -> ReconcileRun | None:
        stmt = select(ReconcileRun).where(ReconcileRun.finished_at.is_not(None))
        if org_id is not None:
            stmt = stmt.where(ReconcileRun.org_id == org_id)
        return session.scalars(
            stmt.order_by(ReconcileRun.finished_at.desc(), ReconcileRun.id.desc()).limit(1)
        ).first()

    def period_close_drift_since(self, session: Session, since: datetime) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(ReconcileRun.drift_minutes), 0)).where(
                ReconcileRun.scope == "period_close", ReconcileRun.finished_at >= since
            )
        )
        return int(total or 0)

    def latest_daily_drift(self, session: Session) -> int | None:
        return session.scalar(
            select(ReconcileRun.drift_minutes)
            .where(ReconcileRun.scope == "daily", ReconcileRun.status == "ok")
            .order_by(ReconcileRun.finished_at.desc(), ReconcileRun.id.desc())
            .limit(1)
        )


class WebhookDeliveryRepository(Repository[WebhookDelivery]):
    model = WebhookDelivery

    def locked(self, session: Session, webhook_id: str) -> WebhookDelivery | None:
        return session.get(WebhookDelivery, webhook_id, with_for_update=True)


plan_changes = PlanChangeRepository()
reconcile_runs = ReconcileRunRepository()
webhook_deliveries = WebhookDeliveryRepository()
