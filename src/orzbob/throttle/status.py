"""What customers see of the caps: those in force now (`throttles`), the refusal of a create
or resume while an org cap holds, and the caps due within the hour (`upcoming`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org, OrgFacts
from orzbob.catalog.models import Catalog
from orzbob.instances.models import Instance, InstanceFacts
from orzbob.kit.errors import CapHolds
from orzbob.kit.money import format_usd
from orzbob.metering.models import SegmentFacts, UsageSegment
from orzbob.quota.service import QuotaStatus, quota_service
from orzbob.throttle.caps import Cap, midnight_after, org_cut
from orzbob.throttle.repository import throttle_repository
from orzbob.throttle.service import own_cuts, throttle_service

UPCOMING_WINDOW = timedelta(hours=1)
IDLE_WARNING_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Throttle:
    cap: str
    detail: str
    lifts_at: datetime | None


@dataclass(frozen=True)
class Upcoming:
    cap: str
    at: datetime
    instance_id: uuid.UUID | None
    instance_name: str | None
    detail: str


def _hhmm(at: datetime) -> str:
    return f"{at.astimezone(UTC):%H:%M} UTC"


class ThrottleStatusService:
    def active(self, status: QuotaStatus, catalog: Catalog) -> list[Throttle]:
        """Org caps in force now, most binding first (the first is `throttle_status`)."""
        plan, out = status.plan, []
        reset = f"{status.period.end:%Y-%m-%d}"
        smallest = min(catalog.tier(t).small_hour_weight for t in plan.tiers)
        if (
            plan.after_allowance == "hard_stop"
            and plan.included_small_minutes > 0
            and status.remaining_small_minutes < smallest
        ):
            out.append(
                Throttle(
                    Cap.QUOTA,
                    f"The {plan.name} allowance of {plan.included_small_hours} small-hours is "
                    f"used up; instances stay paused until the period resets on {reset} "
                    "or you upgrade.",
                    status.period.end,
                )
            )
        if status.spend_limit is not None and status.estimate >= status.spend_limit:
            out.append(
                Throttle(
                    Cap.SPEND,
                    f"The estimated bill {format_usd(status.estimate)} has reached the spend "
                    f"limit of {format_usd(status.spend_limit)}; raise or remove the limit, or "
                    f"wait for the period to reset on {reset}.",
                    status.period.end,
                )
            )
        if status.today_minutes >= plan.daily_cap_instance_hours * 60:
            out.append(
                Throttle(
                    Cap.DAILY,
                    f"Your instances ran {plan.daily_cap_instance_hours} instance-hours today "
                    "(UTC); running again is allowed from 00:00 UTC.",
                    midnight_after(status.now),
                )
            )
        return out

    def check_can_run(self, session: Session, org: Org, now: datetime, catalog: Catalog) -> None:
        """Refuse a create or resume while an org cap holds (the `run_checks` hook)."""
        status = quota_service.status(session, org, catalog=catalog, now=now)
        held = self.active(status, catalog)
        if not held:
            return
        first = held[0]
        # The allowance and the spend limit also lift with an upgrade or a new limit, so
        # only the daily cap promises a time to retry.
        retry = first.lifts_at if first.cap == Cap.DAILY else None
        raise CapHolds(
            first.cap,
            first.detail,
            retry_at=None if retry is None else retry.isoformat().replace("+00:00", "Z"),
        )

    def open_runs(self, session: Session, org_id: uuid.UUID) -> list[tuple[UsageSegment, Instance]]:
        """The org's open usage segments with their instances, in ledger order."""
        return throttle_repository.open_runs(session, [org_id])[org_id]

    def upcoming(
        self,
        session: Session,
        org: OrgFacts,
        *,
        catalog: Catalog,
        now: datetime,
        status: QuotaStatus | None = None,
        pairs: Sequence[tuple[SegmentFacts, InstanceFacts]] | None = None,
    ) -> list[Upcoming]:
        """Caps that will be reached within the next hour if everything running keeps
        running at today's rate, soonest first. `pairs`: the org's open runs, when the
        caller has read them (`throttle_repository.open_runs`)."""
        plan = catalog.plan(org.plan_id)
        if pairs is None:
            pairs = throttle_repository.open_runs(session, [org.id])[org.id]
        if not pairs:
            return []
        hi = now + UPCOMING_WINDOW
        runs = throttle_service.runs(pairs, plan, catalog, hi=hi, closing={})
        out: list[Upcoming] = []
        for _, inst in pairs:
            for at, cap in own_cuts(inst, plan):
                # An instance in use always has an idle deadline ahead; warn only once it
                # looks idle (no activity for a few minutes).
                if cap == Cap.IDLE and now - inst.last_active_at < IDLE_WARNING_AFTER:
                    continue
                if not now < at <= hi:
                    continue
                what = (
                    "idle timeout"
                    if cap == Cap.IDLE
                    else f"{plan.continuous_cap_hours}-hour continuous cap"
                )
                out.append(
                    Upcoming(
                        cap,
                        at,
                        inst.id,
                        inst.name,
                        f"Instance {inst.name} reaches the {what} at {_hhmm(at)} and will pause.",
                    )
                )
        budget = throttle_service.budgets(
            session,
            [org],
            {org.id: runs},
            catalog=catalog,
            now=now,
            hi=hi,
            lock=False,
            statuses=None if status is None else {org.id: status},
        )[org.id]
        shared = org_cut(runs, budget, hi=hi)
        if shared is not None and shared.at > now:
            text = {
                Cap.QUOTA: "The allowance runs out",
                Cap.DAILY: "The daily cap of "
                f"{plan.daily_cap_instance_hours} instance-hours is reached",
                Cap.SPEND: "The estimated bill reaches your spend limit",
            }[shared.cap]
            out.append(
                Upcoming(
                    shared.cap,
                    shared.at,
                    None,
                    None,
                    f"{text} at {_hhmm(shared.at)} at the current rate; running instances "
                    "will pause then.",
                )
            )
        return sorted(out, key=lambda u: u.at)


throttle_status = ThrottleStatusService()
