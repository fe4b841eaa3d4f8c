"""Crossing thresholds (docs/spec.md §5): evaluated in the transaction that writes usage, when a
spend limit changes, and by a periodic catch-up. Each (org, period, kind, threshold) row is
written once; when several thresholds are crossed at once only the highest is sent and the
lower ones are recorded as covered."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, OrgFacts
from orzbob.accounts.service import account_service
from orzbob.alerts.content import facts_for, subject_for
from orzbob.alerts.models import THRESHOLDS, AlertKind, AlertState, BudgetAlert
from orzbob.alerts.repository import ThresholdKey, alert_repository
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import new_id, on_commit
from orzbob.kit.money import to_cents
from orzbob.quota.allocation import lock_periods, org_period
from orzbob.quota.service import QuotaStatus, quota_service
from orzbob.quota.totals import PeriodTotals, period_totals

log = logging.getLogger(__name__)

MESSAGE_ID_DOMAIN = "alerts.orzbob.cloud"
Rows = dict[ThresholdKey, BudgetAlert]


def message_id(alert_id: uuid.UUID, generation: int, resend: int = 0) -> str:
    """Stable per alert generation (a crash resend is the same message); short enough that
    the header is never folded."""
    suffix = f".r{resend}" if resend else ""
    return f"<{alert_id.hex}.{generation}{suffix}@{MESSAGE_ID_DOMAIN}>"


class AlertEvaluator:
    # -- entry points ---------------------------------------------------------------------
    def on_usage_recorded(
        self,
        session: Session,
        rows: Sequence[Mapping[str, Any]],
        orgs_by_id: Mapping[uuid.UUID, OrgFacts],
        catalog: Catalog,
        now: datetime,
    ) -> None:
        """The usage hook: the records' period rows are already locked by allocation. Only
        orgs that can be alerted (an allowance or a spend limit) are looked at."""
        wanted = {oid for oid, org in orgs_by_id.items() if self._can_alert(org, catalog)}
        if not wanted:
            return
        added: dict[tuple[uuid.UUID, datetime], int] = defaultdict(int)
        weights: dict[str, int] = {}
        for r in rows:
            org_id = r["org_id"]
            if org_id not in wanted:
                continue
            tier = r["tier"]
            weight = weights.get(tier)
            if weight is None:
                has = catalog.has_tier(tier)
                weight = weights[tier] = catalog.tier(tier).small_hour_weight if has else 0
            added[(org_id, r["period_start"])] += int(r["minutes"]) * weight
        orgs = [orgs_by_id[i] for i in sorted({k[0] for k in added})]
        self.evaluate(session, orgs, catalog=catalog, now=now, added=added)

    def on_spend_limit_changed(
        self, session: Session, org: Org, catalog: Catalog, now: datetime
    ) -> None:
        """Re-arm the spend thresholds the new limit puts back out of reach, cancel unsent
        ones when the limit is removed, and raise any the new limit is already past."""
        period = org_period(org, now)
        lock_periods(session, {(org.id, period)})
        rows = alert_repository.by_period(session, [(org.id, period.start)])[(org.id, period.start)]
        if org.spend_limit_cents is None:
            for row in rows.values():
                if row.kind == AlertKind.SPEND_LIMIT and row.state == AlertState.PENDING:
                    self._rearm(row, now)
            return
        status = quota_service.status(session, org, catalog=catalog, now=now)
        self._apply(session, org, status, rows, added=0, catalog=catalog, now=now)

    def evaluate(
        self,
        session: Session,
        orgs: Sequence[OrgFacts],
        *,
        catalog: Catalog,
        now: datetime,
        added: dict[tuple[uuid.UUID, datetime], int] | None = None,
        lock: bool = False,
    ) -> int:
        """Raise what the orgs' current periods have crossed; returns alerts raised.

        A cheap look at the rollups decides which orgs may have something to do; only those
        get a full status read (and, given as plain facts, their org row: an alert names its
        contacts). `lock` (the catch-up) takes each such org's period row first, as usage
        writers do, so the two never raise the same threshold twice."""
        current = {org.id: org_period(org, now) for org in orgs if self._can_alert(org, catalog)}
        keys = [(oid, p.start) for oid, p in current.items()]
        if not keys:
            return 0
        totals = period_totals(session, keys, catalog)
        existing = alert_repository.by_period(session, keys)
        raised = 0
        for org in orgs:
            if org.id not in current:
                continue
            key = (org.id, current[org.id].start)
            if not self._might_act(org, catalog, totals[key], existing[key], added, key):
                continue
            if lock:
                lock_periods(session, {(org.id, current[org.id])})
                existing[key] = alert_repository.by_period(session, [key])[key]
            full = (
                org
                if isinstance(org, Org)
                else account_service.get_org(session, org.id, include_deleted=True)
            )
            status = quota_service.status(session, full, catalog=catalog, now=now)
            raised += self._apply(
                session,
                full,
                status,
                existing[key],
                added=(added or {}).get(key, 0),
                catalog=catalog,
                now=now,
            )
        return raised

    # -- deciding -------------------------------------------------------------------------
    @staticmethod
    def _can_alert(org: OrgFacts, catalog: Catalog) -> bool:
        """Whether the org has anything to be alerted about: an allowance or a spend limit."""
        return (
            org.spend_limit_cents is not None
            or catalog.plan(org.plan_id).included_small_minutes > 0
        )

    def _might_act(
        self,
        org: OrgFacts,
        catalog: Catalog,
        totals: PeriodTotals,
        rows: Rows,
        added: dict[tuple[uuid.UUID, datetime], int] | None,
        key: tuple[uuid.UUID, datetime],
    ) -> bool:
        plan = catalog.plan(org.plan_id)
        basis = plan.included_small_minutes
        if basis > 0:
            cur = totals.weighted_minutes * 100
            prev = cur - (added or {}).get(key, 0) * 100
            if self._plan(AlertKind.ALLOWANCE, basis, cur, prev, rows) != ([], []):
                return True
        if org.spend_limit_cents is not None:
            # Credits only lower the estimate: base + usage is an upper bound of it.
            gross = to_cents(plan.monthly_base + totals.usage_cost) * 100
            lowest = THRESHOLDS[AlertKind.SPEND_LIMIT][0]
            if gross >= lowest * org.spend_limit_cents:
                return self._plan(
                    AlertKind.SPEND_LIMIT, org.spend_limit_cents, gross, gross, rows
                ) != ([], [])
        return False

    @staticmethod
    def _plan(
        kind: AlertKind, basis: int, cur: int, prev: int, rows: Rows
    ) -> tuple[list[BudgetAlert], list[int]]:
        """(rows to re-arm, thresholds to raise) for a value (×100) against a basis.

        A row raised against another basis (a new plan, a new limit) re-arms when the value
        before this change was below its threshold of the new basis."""
        rearm = [
            row
            for t in THRESHOLDS[kind]
            if (row := rows.get((kind.value, t))) is not None
            and row.state != AlertState.REARMED
            and row.basis != basis
            and prev < t * basis
        ]
        gone = {r.threshold for r in rearm}
        fresh = [
            t
            for t in THRESHOLDS[kind]
            if cur >= t * basis
            and (
                (row := rows.get((kind.value, t))) is None
                or row.state == AlertState.REARMED
                or t in gone
            )
        ]
        return rearm, fresh

    def _apply(
        self,
        session: Session,
        org: Org,
        status: QuotaStatus,
        rows: Rows,
        *,
        added: int,
        catalog: Catalog,
        now: datetime,
    ) -> int:
        raised = 0
        included = status.plan.included_small_minutes
        if included > 0:
            cur = status.weighted_minutes * 100
            raised += self._kind(
                session, org, status, AlertKind.ALLOWANCE, included, cur, cur - added * 100,
                rows, catalog=catalog, now=now,
            )  # fmt: skip
        if status.spend_limit is not None:
            cur = to_cents(status.estimate) * 100
            raised += self._kind(
                session, org, status, AlertKind.SPEND_LIMIT, to_cents(status.spend_limit), cur,
                cur, rows, catalog=catalog, now=now,
            )  # fmt: skip
        return raised

    def _kind(
        self,
        session: Session,
        org: Org,
        status: QuotaStatus,
        kind: AlertKind,
        basis: int,
        cur: int,
        prev: int,
        rows: Rows,
        *,
        catalog: Catalog,
        now: datetime,
    ) -> int:
        rearm, fresh = self._plan(kind, basis, cur, prev, rows)
        for row in rearm:
            self._rearm(row, now)
        if not fresh:
            return 0
        top = max(fresh)
        head = self._raise(
            session, org, status, kind, top, basis, rows, catalog=catalog, now=now, covered_by=None
        )
        for t in fresh:
            if t < top:
                self._raise(
                    session, org, status, kind, t, basis, rows, catalog=catalog, now=now,
                    covered_by=head.id,
                )  # fmt: skip
        # An older, lower alert still waiting to go out says less than this one: never send it.
        for (k, t), row in rows.items():
            if k == kind and t < top and row.state == AlertState.PENDING and row is not head:
                row.state, row.covered_by_id = AlertState.COVERED.value, head.id
        session.flush()
        log.info("budget alert raised: org %s %s %d%%", org.id, kind.value, top)
        return 1

    def _raise(
        self,
        session: Session,
        org: Org,
        status: QuotaStatus,
        kind: AlertKind,
        threshold: int,
        basis: int,
        rows: Rows,
        *,
        catalog: Catalog,
        now: datetime,
        covered_by: uuid.UUID | None,
    ) -> BudgetAlert:
        facts = facts_for(
            status,
            kind=kind,
            threshold=threshold,
            catalog=catalog,
            has_polar_customer=org.polar_customer_id is not None,
        )
        contacts = list(org.billing_emails or [])
        if covered_by is not None:
            state, error = AlertState.COVERED, None
        elif contacts:
            state, error = AlertState.PENDING, None
        else:
            state, error = AlertState.UNDELIVERABLE, "The organization has no billing contact."
            on_commit(session, metrics.alerts_failed_total.labels(kind=kind.value).inc)
        row = rows.get((kind.value, threshold))
        if row is None:
            row = BudgetAlert(
                id=new_id(),
                org_id=org.id,
                period_start=status.period.start,
                period_end=status.period.end,
                kind=kind.value,
                threshold=threshold,
                generation=1,
            )
            session.add(row)
            rows[(kind.value, threshold)] = row
        else:
            row.generation += 1
        row.state = state.value
        row.basis = basis
        row.covered_by_id = covered_by
        row.created_at = now
        row.subject = subject_for(facts)
        row.facts = facts
        row.message_id = message_id(row.id, row.generation)
        row.recipients = contacts
        row.attempts = 0
        row.next_attempt_at = now
        row.claimed_by = row.claim_expires_at = None
        row.last_error, row.smtp_reply, row.sent_at, row.rearmed_at = error, None, None, None
        return row

    @staticmethod
    def _rearm(row: BudgetAlert, now: datetime) -> None:
        row.state = AlertState.REARMED.value
        row.rearmed_at = now
        row.covered_by_id = None


alert_evaluator = AlertEvaluator()
