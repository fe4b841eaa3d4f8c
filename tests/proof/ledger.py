"""The three totals of the crash proofs, per org: minutes implied by the lifecycle (the
instance events), minutes in the ledger (usage records) and minutes Polar stored; and the
budget alerts: the ones the final usage says must exist, each received exactly once."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
from sqlalchemy import func, select

from orzbob.accounts.models import Org
from orzbob.alerts.models import THRESHOLDS, AlertKind, AlertState, BudgetAlert
from orzbob.config import Settings
from orzbob.hooks import install_hooks
from orzbob.instances.models import TRANSITIONS, Instance, InstanceEvent, State
from orzbob.kit.money import to_cents
from orzbob.metering.models import RecordState, UsageRecord, UsageSegment
from orzbob.metering.service import rounded_minutes
from orzbob.quota.service import QuotaStatus, quota_service
from orzbob.runtime import Runtime


@dataclass
class Totals:
    instances: int = 0
    lifecycle: int = 0
    ledger: int = 0
    polar: int = 0
    by_org: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)  # state -> count
    stored_twice: list[str] = field(default_factory=list)
    missing_at_polar: int = 0
    unknown_at_polar: int = 0
    not_stopped: int = 0
    lifecycle_errors: list[str] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)  # state -> count
    # Alert e-mails: one per alert recorded as sent; the rows themselves are checked against
    # the thresholds the final usage crossed (`alert_errors`).
    alerts_expected: int = 0
    alerts_delivered: int = 0  # expected Message-IDs the SMTP server received
    mails: int = 0  # alert e-mails the SMTP server accepted, copies included
    resent_in_flight: int = 0  # a copy of a message whose send a kill -9 interrupted
    resent_other: int = 0  # any other copy: a bug
    mails_unknown: int = 0  # received, matching no alert
    alert_errors: list[str] = field(default_factory=list)

    def settled(self) -> bool:
        return (
            set(self.records) <= {RecordState.SENT.value}
            and self.missing_at_polar == 0
            and AlertState.PENDING.value not in self.alerts
        )

    def problems(self) -> list[str]:
        found = list(self.lifecycle_errors)
        if not self.settled():
            found.append(f"records not all sent: {self.records}, {self.missing_at_polar} missing")
        if self.stored_twice:
            found.append(f"external ids stored twice at Polar: {self.stored_twice[:5]}")
        if self.unknown_at_polar:
            found.append(f"{self.unknown_at_polar} events at Polar match no record")
        bad = {k: v for k, v in self.alerts.items() if k not in ALERT_DONE}
        if bad:
            found.append(f"alerts not delivered: {bad}")
        found += self.alert_errors
        if self.alerts_delivered != self.alerts_expected or self.mails_unknown:
            found.append(
                f"{self.alerts_expected} alert e-mails expected, {self.alerts_delivered} "
                f"received, {self.mails_unknown} unknown mails"
            )
        if self.resent_other:
            found.append(
                f"{self.resent_other} alert e-mails received twice with no kill mid-send to "
                "explain them"
            )
        if self.not_stopped:
            found.append(f"{self.not_stopped} instances are not stopped")
        for org, (life, ledger, polar) in self.by_org.items():
            if not life == ledger == polar:
                found.append(f"org {org}: lifecycle {life}, ledger {ledger}, Polar {polar}")
        if not self.lifecycle == self.ledger == self.polar:
            found.append(f"totals: {self.lifecycle} / {self.ledger} / {self.polar}")
        return found


def polar_events(polar_url: str) -> list[dict]:  # type: ignore[type-arg]
    events: list[dict] = []  # type: ignore[type-arg]
    with httpx.Client(base_url=polar_url + "/_control", timeout=60) as c:
        while True:
            page = c.get("/events", params={"limit": 5000, "offset": len(events)}).json()
            events += page["items"]
            if len(events) >= page["total"] or not page["items"]:
                return events


ALERT_DONE = {AlertState.SENT.value, AlertState.COVERED.value, AlertState.REARMED.value}


def totals(
    db_url: str,
    polar_url: str,
    mail_ids: list[str] | None = None,
    in_flight: Counter[str] | None = None,
) -> Totals:
    """`mail_ids`: the Message-ID of every alert e-mail received; `in_flight`: per Message-ID,
    how many killed processes died while sending it (each may explain one more copy)."""
    settings = Settings(_env_file=None, database_url=db_url, env="test")  # type: ignore[call-arg]
    # The quota status below needs the credits provider; `make proof` runs this outside
    # pytest, where no fixture installs the hooks.
    install_hooks()
    runtime = Runtime.create(settings)
    try:
        with runtime.session() as s:
            instances = list(s.scalars(select(Instance)))
            events: dict[uuid.UUID, list[InstanceEvent]] = defaultdict(list)
            # Ids are time-ordered at insert, the order transitions were committed in (a
            # worker's test clock may trail an API's by a tick, so `at` is not that order).
            for e in s.scalars(select(InstanceEvent).order_by(InstanceEvent.id)):
                events[e.instance_id].append(e)
            segments: dict[uuid.UUID, list[UsageSegment]] = defaultdict(list)
            for seg in s.scalars(select(UsageSegment).order_by(UsageSegment.started_at)):
                segments[seg.instance_id].append(seg)
            records = list(s.scalars(select(UsageRecord)))
            alerts = list(s.scalars(select(BudgetAlert)))
            states = dict(
                s.execute(select(UsageRecord.state, func.count()).group_by(UsageRecord.state)).all()
            )
            # The thresholds the final usage crossed, from the quota read model (all of the
            # run falls in one period: the orgs' first).
            moments = [e.at for chain in events.values() for e in chain]
            crossed = {
                org.id: _crossed(
                    quota_service.status(s, org, catalog=runtime.catalog, now=max(moments))
                )
                for org in (s.scalars(select(Org)) if moments else [])
            }
    finally:
        runtime.engine.dispose()
    result = Totals(instances=len(instances), records={str(k): v for k, v in states.items()})
    result.alerts = dict(Counter(a.state for a in alerts))
    result.alert_errors = _check_alerts(alerts, crossed)
    received = Counter(mail_ids or [])
    sent_ids = {a.message_id for a in alerts if a.state == AlertState.SENT.value}
    result.alerts_expected = len(sent_ids)
    result.alerts_delivered = len(sent_ids & set(received))
    result.mails = sum(received.values())
    result.resent_in_flight, result.resent_other = count_copies(received, in_flight or Counter())
    result.mails_unknown = len(set(received) - {a.message_id for a in alerts})
    life: Counter[str] = Counter()
    for inst in instances:
        if inst.state != State.STOPPED.value:
            result.not_stopped += 1
        life[str(inst.org_id)] += _lifecycle_minutes(
            inst, events[inst.id], segments[inst.id], result
        )
    ledger: Counter[str] = Counter()
    for rec in records:
        ledger[str(rec.org_id)] += rec.minutes
    polar: Counter[str] = Counter()
    stored = polar_events(polar_url)
    ids = Counter(e["external_id"] for e in stored)
    result.stored_twice = [i for i, n in ids.items() if n > 1]
    record_ids = {str(r.id) for r in records}
    result.missing_at_polar = len(record_ids - set(ids))
    result.unknown_at_polar = len(set(ids) - record_ids)
    for e in stored:
        polar[str(e["external_customer_id"])] += int(e["metadata"]["minutes"])
    for org in set(life) | set(ledger) | set(polar):
        result.by_org[org] = (life[org], ledger[org], polar[org])
    result.lifecycle, result.ledger = sum(life.values()), sum(ledger.values())
    result.polar = sum(polar.values())
    return result


def count_copies(received: Counter[str], in_flight: Counter[str]) -> tuple[int, int]:
    """(extra copies a kill mid-send explains, any other extra copies) of the received
    Message-IDs: each killed run that died sending a message explains one copy of it."""
    explained = other = 0
    for mid, n in received.items():
        ok = min(n - 1, in_flight[mid])
        explained, other = explained + ok, other + n - 1 - ok
    return explained, other


def _crossed(status: QuotaStatus) -> dict[str, list[int]]:
    """Per alert kind, the thresholds the org's usage has reached (docs/spec.md §5)."""
    out: dict[str, list[int]] = {}
    included = status.plan.included_small_minutes
    if included > 0:
        used = status.weighted_minutes * 100
        out[AlertKind.ALLOWANCE.value] = [
            t for t in THRESHOLDS[AlertKind.ALLOWANCE] if used >= t * included
        ]
    if status.spend_limit is not None:
        spent, limit = to_cents(status.estimate) * 100, to_cents(status.spend_limit)
        out[AlertKind.SPEND_LIMIT.value] = [
            t for t in THRESHOLDS[AlertKind.SPEND_LIMIT] if spent >= t * limit
        ]
    return out


def _check_alerts(
    alerts: list[BudgetAlert], crossed: dict[uuid.UUID, dict[str, list[int]]]
) -> list[str]:
    """Every threshold reached has its alert, and no other exists; the highest reached of each
    kind was sent; a lower one was sent, or covered by a higher one sent in its place."""
    found: list[str] = []
    rows = {(a.org_id, a.kind, a.threshold): a for a in alerts}
    for a in alerts:
        if a.threshold not in crossed.get(a.org_id, {}).get(a.kind, []):
            found.append(f"org {a.org_id}: a {a.kind} {a.threshold}% alert, never reached")
    for org, kinds in crossed.items():
        for kind, reached in kinds.items():
            for t in reached:
                row = rows.get((org, kind, t))
                if row is None:
                    found.append(f"org {org}: {kind} {t}% reached, no alert raised")
                elif t == max(reached) and row.state != AlertState.SENT.value:
                    found.append(f"org {org}: {kind} {t}% (the highest) is {row.state}")
                elif row.state == AlertState.COVERED.value:
                    cover = next(
                        (r for r in alerts if r.id == row.covered_by_id and r.threshold > t), None
                    )
                    if cover is None or cover.state != AlertState.SENT.value:
                        found.append(f"org {org}: {kind} {t}% covered by no higher alert sent")
                elif row.state != AlertState.SENT.value:
                    found.append(f"org {org}: {kind} {t}% is {row.state}")
    return found


# CUT_EARLY: the bill stops at the heartbeat timeout (even when the user stops a silent
# instance later) or at a cap's computed moment, which the sweep records a little later.


def _lifecycle_minutes(
    inst: Instance, chain: list[InstanceEvent], segs: list[UsageSegment], result: Totals
) -> int:
    """Minutes from the instance's transitions: each stretch of `running`, from entering it to
    leaving it (for a timeout or a cap, to the earlier moment the service closed it at)."""
    state = State.PENDING
    for e in chain:
        if e.from_state != state.value or State(e.to_state) not in TRANSITIONS[state]:
            moves = [(x.from_state, x.to_state, x.reason, x.at.isoformat()) for x in chain]
            result.lifecycle_errors.append(f"instance {inst.id}: illegal transition in {moves}")
            return 0
        state = State(e.to_state)
    entered = [e for e in chain if e.to_state == State.RUNNING.value]
    left = [e for e in chain if e.from_state == State.RUNNING.value]
    if not len(segs) == len(entered) == len(left):
        result.lifecycle_errors.append(
            f"instance {inst.id}: {len(entered)} runs, {len(left)} ends, {len(segs)} segments"
        )
        return 0
    minutes = 0
    for seg, start, end in zip(segs, entered, left, strict=True):
        stop = end.at
        # The bill may stop before the transition is recorded (see CUT_EARLY), never after;
        # a worker's clock may trail an API's by a tick, so the recorded moment of a cap that
        # cut a stretch at its start can even precede it.
        if seg.ended_at is not None and start.at <= seg.ended_at <= max(end.at, start.at):
            stop = seg.ended_at
        if seg.started_at != start.at or seg.ended_at != stop:
            result.lifecycle_errors.append(
                f"instance {inst.id}: segment {seg.started_at}..{seg.ended_at} disagrees with "
                f"running {start.at}..{end.at} ({end.reason})"
            )
        minutes += rounded_minutes(start.at, stop)
    return minutes
