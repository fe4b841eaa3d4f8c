"""Caps that pause instances (docs/spec.md §6): idle, 8-hour continuous run, 24 instance-hours a UTC
day, the free allowance's hard stop and the customer's spend limit.

Where each is enforced:
* the checkpoint and every segment close ask `limits` how far usage may be counted, so no
  minute past a cap is ever recorded, however late anything runs;
* the sweep (`enforce`) pauses what a cap has reached, closing usage at the cap's moment;
* a heartbeat that crosses a cap pauses its instance at once (`heartbeat_cut`);
* create and resume are refused while an org cap holds (`throttle.status`).

Lock order, as everywhere: instance → usage segment → quota period. The callers hold their
instance and segment locks; `budgets` locks the org's quota period before it reads what is
left, so two transactions never both spend the same allowance.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, OrgFacts
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog, Plan
from orzbob.instances.models import Instance, InstanceFacts, Reason, State
from orzbob.instances.repository import instance_repository
from orzbob.instances.service import instance_service
from orzbob.kit import metrics
from orzbob.kit.money import minutes_cost
from orzbob.metering.models import SegmentFacts, UsageSegment
from orzbob.metering.service import metering_service
from orzbob.quota.allocation import lock_periods, org_period
from orzbob.quota.repository import quota_repository
from orzbob.quota.service import QuotaStatus, quota_service
from orzbob.throttle.caps import Cap, Cut, OrgBudget, Run, SpendBudget, org_cut
from orzbob.throttle.repository import throttle_repository

# Usage a beaten org may have run since its last checkpoint, for the bulk path's prefilter
# (a larger gap only delays the pause to the next sweep; the cut stays exact).
BULK_MARGIN_MINUTES = 5  # also the heartbeat's prefilter
CENT = Decimal("0.01")
log = logging.getLogger(__name__)


def own_cuts(inst: InstanceFacts, plan: Plan) -> list[tuple[datetime, str]]:
    """The instance's own caps, soonest first (on a tie the continuous cap names it)."""
    started = inst.run_started_at or inst.state_changed_at
    return sorted(
        [
            (started + timedelta(hours=plan.continuous_cap_hours), Cap.CONTINUOUS),
            (inst.last_active_at + timedelta(minutes=plan.idle_timeout_minutes), Cap.IDLE),
        ],
        key=lambda c: (c[0], c[1] != Cap.CONTINUOUS),
    )


def usage_days(
    runs: Mapping[uuid.UUID, list[Run]], *, now: datetime, hi: datetime
) -> tuple[date, date]:
    """The UTC days whose usage the org caps of these runs depend on, up to `hi`."""
    lo = min((r.counted_until for rs in runs.values() for r in rs), default=now)
    return lo.astimezone(UTC).date(), hi.astimezone(UTC).date()


def _uncounted_minutes(oldest_counted: datetime, now: datetime) -> int:
    """The most minutes (rounded up) a running instance can add by `now` to what is counted,
    when the least recently counted open segment is counted up to `oldest_counted`."""
    return -(-int((now - oldest_counted).total_seconds()) // 60) + 1


class ThrottleService:
    # -- exact cut moments ---------------------------------------------------------------
    def runs(
        self,
        pairs: Sequence[tuple[SegmentFacts, InstanceFacts]],
        plan: Plan,
        catalog: Catalog,
        *,
        hi: datetime,
        closing: Mapping[uuid.UUID, datetime],
    ) -> list[Run]:
        """Runs as if each kept running up to `hi` (or up to the moment it is `closing`).

        Caps are judged on run time, not on heartbeats: a cap pauses at its moment, as a
        user's pause does. The checkpoint still counts no further than the last heartbeat,
        so a cut computed this way is never later than what the ledger could reach."""
        runs = []
        for seg, inst in pairs:
            own_at, own_cap = own_cuts(inst, plan)[0]
            upto = min(hi, own_at, closing.get(seg.id, hi))
            runs.append(
                Run(
                    instance_id=inst.id,
                    instance_name=inst.name,
                    segment_id=seg.id,
                    tier=seg.tier,
                    weight=catalog.tier(seg.tier).small_hour_weight,
                    started_at=seg.started_at,
                    counted_until=seg.counted_until,
                    emitted=seg.emitted_minutes,
                    upto=upto,
                    own_cut=own_at,
                    own_cap=own_cap,
                )
            )
        return runs

    def budgets(
        self,
        session: Session,
        orgs: Sequence[OrgFacts],
        runs: Mapping[uuid.UUID, list[Run]],
        *,
        catalog: Catalog,
        now: datetime,
        hi: datetime,
        lock: bool,
        statuses: Mapping[uuid.UUID, QuotaStatus] | None = None,
    ) -> dict[uuid.UUID, OrgBudget]:
        """What is left of each org's budgets; with `lock`, read from its locked period row.
        A caller that already holds an org's status passes it in `statuses`."""
        periods = {o.id: org_period(o, now) for o in orgs}
        rows = lock_periods(session, {(o.id, periods[o.id]) for o in orgs}) if lock else {}
        first, last = usage_days(runs, now=now, hi=hi)
        today = now.astimezone(UTC).date()
        if statuses and first == last == today and all(o.id in statuses for o in orgs):
            # Only today counts, and the statuses hold today's usage: no query.
            days: Mapping[uuid.UUID, dict[date, int]] = {
                o.id: {today: statuses[o.id].today_minutes} for o in orgs
            }
        else:
            days = quota_repository.days_minutes(session, [o.id for o in orgs], first, last)
        out: dict[uuid.UUID, OrgBudget] = {}
        for org in orgs:
            plan = catalog.plan(org.plan_id)
            budget = OrgBudget(
                daily_cap_minutes=plan.daily_cap_instance_hours * 60,
                day_used=dict(days.get(org.id, {})),
            )
            status = (statuses or {}).get(org.id)
            if status is None and (org.spend_limit_cents is not None or not lock):
                status = quota_service.status(session, org, catalog=catalog, now=now)
            if plan.after_allowance == "hard_stop" and plan.included_small_minutes > 0:
                qp = rows.get((org.id, periods[org.id].start))
                used = qp.used_small_minutes if qp else (status.used_small_minutes if status else 0)
                budget.allowance_left = plan.included_small_minutes - used
            if org.spend_limit_cents is not None and status is not None:
                assert status.spend_limit is not None
                budget.spend = SpendBudget(
                    limit=status.spend_limit,
                    base=plan.monthly_base,
                    credits_available=status.credits.carried_in
                    + status.credits.granted_this_period,
                    allowance_left=max(0, plan.included_small_minutes - status.used_small_minutes),
                    bills_overage=plan.bills_overage,
                    billable={t.tier: t.billable_minutes for t in status.tiers},
                    rates={t.id: t.hourly_rate for t in catalog.tiers},
                )
            out[org.id] = budget
        return out

    def cuts(
        self,
        session: Session,
        orgs: Sequence[OrgFacts],
        *,
        catalog: Catalog,
        now: datetime,
        pairs: Mapping[uuid.UUID, Sequence[tuple[UsageSegment, Instance]]] | None = None,
        closing: Mapping[uuid.UUID, datetime] | None = None,
    ) -> dict[uuid.UUID, Cut]:
        """For every open segment of these orgs, the first cap it meets up to `now` (or,
        for a segment in `closing`, up to the moment it is being closed), if any."""
        closing = closing or {}
        if pairs is None:
            pairs = throttle_repository.open_runs(session, [o.id for o in orgs])
        hi = max([now, *closing.values()])
        runs = {
            o.id: self.runs(
                pairs.get(o.id, []),
                catalog.plan(o.plan_id),
                catalog,
                hi=hi,
                closing=closing,
            )
            for o in orgs
        }
        budgets = self.budgets(session, orgs, runs, catalog=catalog, now=now, hi=hi, lock=True)
        out: dict[uuid.UUID, Cut] = {}
        for org in orgs:
            shared = org_cut(runs[org.id], budgets[org.id], hi=hi)
            for run in runs[org.id]:
                own = Cut(run.own_cut, run.own_cap)
                best = shared if shared is not None and shared.at < own.at else own
                if best.at <= hi:
                    out[run.segment_id] = best
        return out

    def limits(
        self,
        session: Session,
        orgs: Sequence[OrgFacts],
        catalog: Catalog,
        now: datetime,
        closing: Mapping[uuid.UUID, datetime],
    ) -> dict[uuid.UUID, datetime]:
        """The metering limiter: the latest instant each open segment may be counted to.

        The checkpoint asks for whole batches of orgs; only those that may be at a cap by
        `now` get the exact computation (`_may_reach_a_cap`). A close asks for one org and
        always gets it."""
        if not closing:
            orgs = self._may_reach_a_cap(session, orgs, catalog, now)
            if not orgs:
                return {}
        return {
            seg_id: cut.at
            for seg_id, cut in self.cuts(
                session, orgs, catalog=catalog, now=now, closing=closing
            ).items()
        }

    def _may_reach_a_cap(
        self, session: Session, orgs: Sequence[OrgFacts], catalog: Catalog, now: datetime
    ) -> list[OrgFacts]:
        """The orgs of a checkpoint batch whose usage up to `now` may meet a cap: a
        conservative prefilter (the sweep's set-based rule with a margin as wide as the
        oldest uncounted stretch, and an upper bound on each spend-limited org's bill), so
        an org it drops can reach no cap by `now` and needs no exact computation."""
        ids = [o.id for o in orgs]
        oldest = throttle_repository.oldest_counted(session, ids)
        if oldest is None:
            return []  # nothing open: nothing to limit
        if oldest.astimezone(UTC).date() != now.astimezone(UTC).date():
            return list(orgs)  # usage spans midnight: the daily cap needs two days' rollups
        margin = _uncounted_minutes(oldest, now)
        # Only the batch's spend-limited orgs need a bound: a batch without any sends none.
        limited = [o.id for o in orgs if o.spend_limit_cents is not None]
        near = set(
            self.near_caps(
                session,
                catalog=catalog,
                now=now,
                margin_minutes=margin,
                org_ids=ids,
                spend_limited=limited,
            )
        )
        return [o for o in orgs if o.id in near]

    def near_caps(
        self,
        session: Session,
        *,
        catalog: Catalog,
        now: datetime,
        margin_minutes: int,
        org_ids: Sequence[uuid.UUID] | None = None,
        spend_limited: Sequence[uuid.UUID] | None = None,
    ) -> list[uuid.UUID]:
        """Orgs with a running instance (of `org_ids`, or of the whole fleet) that a cap may
        stop by `now` if every running instance ran `margin_minutes` more: the sweep's
        set-based rule for the plans' caps, and an upper bound on each spend-limited org's
        bill for its limit. Conservative: an org left out reaches no cap, and a spend-limited
        org far from its limit costs no exact computation. `spend_limited`, when the caller
        knows them, are the spend-limited orgs of `org_ids`."""
        near = dict.fromkeys(
            throttle_repository.sweep_candidates(
                session,
                catalog=catalog,
                now=now,
                margin_minutes=margin_minutes,
                org_ids=org_ids,
                custom_plan=org_ids is not None,
            )
        )
        # Only the spend-limited orgs the rule left out need a bound.
        if spend_limited is not None:
            unbounded: Sequence[uuid.UUID] | None = [i for i in spend_limited if i not in near]
        else:
            unbounded = None if org_ids is None else [i for i in org_ids if i not in near]
        if unbounded is None or unbounded:
            near.update(
                dict.fromkeys(
                    self._near_spend_limit(session, catalog, now, margin_minutes, unbounded)
                )
            )
        return list(near)

    @staticmethod
    def _near_spend_limit(
        session: Session,
        catalog: Catalog,
        now: datetime,
        margin_minutes: int,
        org_ids: Sequence[uuid.UUID] | None,
    ) -> list[uuid.UUID]:
        """The spend-limited orgs with a running instance (of `org_ids`, or all) whose bill
        may reach their limit if every running instance ran `margin_minutes` more: an upper
        bound from the period's billable minutes, two statements for any number of orgs."""
        # Any tier: an instance started under an earlier plan may still run.
        top = max(t.hourly_rate for t in catalog.tiers)
        near = []
        for org_id, b in throttle_repository.spend_bounds(session, org_ids, now).items():
            # Credits only lower the bill, and each tier's cost is rounded once (+1 cent).
            bound = catalog.plan(b.plan_id).monthly_base + sum(
                (
                    minutes_cost(m, catalog.tier(t).hourly_rate) + CENT
                    for t, m in b.billable.items()
                ),
                Decimal(0),
            )
            bound += minutes_cost(b.running * margin_minutes, top) + CENT
            if bound * 100 >= b.limit_cents:
                near.append(org_id)
        return near

    # -- enforcement ---------------------------------------------------------------------
    def enforce(
        self, session: Session, org_id: uuid.UUID, *, catalog: Catalog, now: datetime
    ) -> list[Instance]:
        """Pause the org's running instances that a cap has reached by `now`, closing their
        usage at the cap's moment. One org per transaction; returns the paused instances."""
        # A plan change that fell due is applied first: caps are judged under the new plan,
        # and the usage closed here is split at the change (org lock before instances).
        instance_service.apply_due_changes(session, org_id, catalog=catalog, now=now)
        org = account_service.get_org(session, org_id)
        # Lock order: the running instances (skipping any another transaction holds), then
        # their open segments, before `cuts` locks the quota period.
        instances = instance_repository.lock_running(session, org.id)
        if not instances:
            return []
        segments = metering_service.open_segments_of(session, [i.id for i in instances])
        locked = [(i, segments[i.id]) for i in instances if i.id in segments]
        if not locked:
            return []
        by_segment = {seg.id: inst for inst, seg in locked}
        cuts = self.cuts(
            session,
            [org],
            catalog=catalog,
            now=now,
            pairs={org.id: [(seg, inst) for inst, seg in locked]},
        )
        halts = [
            (by_segment[seg_id], Reason(cut.cap), cut.at)
            for seg_id, cut in sorted(cuts.items(), key=lambda kv: kv[1].at)
            if seg_id in by_segment and cut.at <= now
        ]
        instance_service.halt_many(session, org, halts, to=State.PAUSED, catalog=catalog, now=now)
        return [inst for inst, _, _ in halts]

    def enforce_orgs(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        org_ids: Sequence[uuid.UUID],
        *,
        catalog: Catalog,
        now: datetime,
    ) -> dict[uuid.UUID, str]:
        """`enforce` each org in its own transaction; one org's failure is logged and left
        to the next sweep. Returns {paused instance id: cap}."""
        paused: dict[uuid.UUID, str] = {}
        for org_id in org_ids:
            try:
                with sessions() as session:
                    for inst in self.enforce(session, org_id, catalog=catalog, now=now):
                        paused[inst.id] = inst.reason or ""
            except Exception:  # one org must not stop the caps of every other
                log.exception("cap enforcement failed for org %s; the next sweep retries", org_id)
                metrics.cap_sweep_errors_total.inc()
        return paused

    def bulk_cap_check(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        org_ids: Sequence[uuid.UUID],
        now: datetime,
        catalog: Catalog,
    ) -> dict[uuid.UUID, str]:
        """The `bulk_cap_checks` hook of instances: caps of the orgs a batch of beats
        touched, found as the sweep finds them (`near_caps`) and enforced one org at a
        time."""
        if not org_ids:
            return {}
        with sessions() as session:
            candidates = self.near_caps(
                session,
                catalog=catalog,
                now=now,
                margin_minutes=self._uncounted_margin(session, org_ids, now),
                org_ids=org_ids,
            )
        return self.enforce_orgs(sessions, candidates, catalog=catalog, now=now)

    def heartbeat_cut(
        self, session: Session, org: Org, instance: Instance, now: datetime, catalog: Catalog
    ) -> Cut | None:
        """The cap this running, locked instance has reached by `now`, if any.

        Its own caps need no query. The org's caps are computed exactly only when the
        sweep's set-based prefilter says this org may be at one: a heartbeat costs one
        query, not the whole computation."""
        plan = catalog.plan(org.plan_id)
        due = any(at <= now for at, _ in own_cuts(instance, plan))
        if not due and not self._org_cap_near(session, org, plan, catalog, now):
            return None
        seg = metering_service.open_segment_of(session, instance.id)
        if seg is None:
            return None
        cut = self.cuts(session, [org], catalog=catalog, now=now).get(seg.id)
        return cut if cut is not None and cut.at <= now else None

    def _org_cap_near(
        self, session: Session, org: Org, plan: Plan, catalog: Catalog, now: datetime
    ) -> bool:
        """Whether an org cap may be reached now, from the rollups plus what every running
        instance could have run since its last checkpoint (the sweep's rule, for one org),
        and for a spend limit the bound on the bill that bulk beats use."""
        # The beat's own pending write (last seen) changes nothing read here: not flushing
        # it first keeps a beat at one UPDATE.
        with session.no_autoflush:
            n, used, today = throttle_repository.org_snapshot(session, org.id, now)
            margin = n * BULK_MARGIN_MINUTES
            if today + margin >= plan.daily_cap_instance_hours * 60:
                return True
            heaviest = max(t.small_hour_weight for t in catalog.tiers)  # any tier, as the sweep
            if (
                plan.after_allowance == "hard_stop"
                and plan.included_small_minutes > 0
                and used + margin * heaviest >= plan.included_small_minutes
            ):
                return True
            if org.spend_limit_cents is None:
                return False
            minutes = self._uncounted_margin(session, [org.id], now)
            return bool(self._near_spend_limit(session, catalog, now, minutes, [org.id]))

    @staticmethod
    def _uncounted_margin(session: Session, org_ids: Sequence[uuid.UUID], now: datetime) -> int:
        """Minutes of running that these orgs' caps must allow for beyond what is counted:
        `BULK_MARGIN_MINUTES`, or more while the checkpoint is behind (then more orgs are
        enforced, never fewer)."""
        oldest = throttle_repository.oldest_counted(session, org_ids)
        if oldest is None:
            return BULK_MARGIN_MINUTES
        return max(BULK_MARGIN_MINUTES, _uncounted_minutes(oldest, now))

    def quiet_beat(
        self, catalog: Catalog, now: datetime
    ) -> tuple[ColumnElement[bool], dict[str, object]]:
        """The `quiet_clauses` hook of instances for `cap_check`: `heartbeat_cut`'s
        prefilter as a SQL condition on the beaten instance and its org, true only when the
        prefilter would find no cap near (a beat that meets it needs no cap check)."""
        return throttle_repository.quiet_beat(catalog, now, BULK_MARGIN_MINUTES)

    def cap_check(
        self, session: Session, org: Org, instance: Instance, now: datetime, catalog: Catalog
    ) -> tuple[datetime, str] | None:
        """The `cap_checks` hook of instances: (moment, cap) when a heartbeat finds one."""
        cut = self.heartbeat_cut(session, org, instance, now, catalog)
        return None if cut is None else (cut.at, cut.cap)

    # -- what holds now, and what comes next ---------------------------------------------


throttle_service = ThrottleService()
