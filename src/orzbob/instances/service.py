"""The instance lifecycle (docs/spec.md §2) and the usage it produces.

Lock order, everywhere: org row → instance row → usage segment → quota period. Row locks are
`FOR NO KEY UPDATE` (key_share=True) so the foreign-key checks of inserts that reference a
locked org or instance (usage records, events) do not wait on it.

The global rule for jobs (docs/architecture.md): a transaction never takes a lock of an
earlier rank after one of a later rank. A job that touches several orgs either works one org
(or one instance) per transaction, or takes every lock of one rank, in key order, before any
lock of the next: orgs by id, then instances, then segments, then quota periods by (org,
period start). The heartbeat-timeout sweep (instances.sweeps) stops one instance per
transaction; the checkpoint locks all its segments first, then the periods in key order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.instances.models import TRANSITIONS, Instance, InstanceEvent, Reason, State
from orzbob.instances.providers import Provider, default_provider
from orzbob.instances.repository import instance_repository
from orzbob.kit import metrics
from orzbob.kit.db import StatementConnection, on_commit
from orzbob.kit.errors import Conflict, Forbidden, NotFound, Unprocessable
from orzbob.metering import service as metering
from orzbob.metering.service import metering_service

# Checks run before an instance may start or resume; each raises a 4xx saying which cap
# forbids running and when it lifts. The throttle domain adds its caps here.
RunCheck = Callable[[Session, Org, datetime, Catalog], None]
run_checks: list[RunCheck] = []
# Checks run on every heartbeat of a running, locked instance: the moment a cap was reached
# and the cap's reason, if one was. The throttle domain adds its caps here.
CapCheck = Callable[[Session, Org, Instance, datetime, Catalog], "tuple[datetime, str] | None"]
cap_checks: list[CapCheck] = []
# A cap check that can say, as a SQL condition on the beaten instance (`instances`) and its
# org (`orgs`), when it certainly finds nothing, registers that condition here under its
# check; with one for every check, a beat that meets them all is written in one statement
# (`quick_heartbeat`). The condition comes with its bound parameters at `now`.
QuietClause = Callable[[Catalog, datetime], "tuple[ColumnElement[bool], dict[str, object]]"]
quiet_clauses: dict[CapCheck, QuietClause] = {}
# A scheduled plan change that fell due is a usage boundary (docs/spec.md §7): each hook
# applies the org's due change, if there is one, taking the org row lock itself. Paths that
# close usage run them before they lock an instance, so the minutes after the change are
# recorded under the new plan even before the plan-change job runs. The polar domain
# registers its scheduled changes here.
DueChange = Callable[[Session, uuid.UUID, Catalog, datetime], bool]
due_changes: list[DueChange] = []


@dataclass(frozen=True)
class Beat:
    """What a heartbeat did: the instance, and the cap that paused it, if one did."""

    instance: Instance
    paused_by: str | None = None
    cap_reached_at: datetime | None = None


class InstanceService:
    def __init__(self, provider: Provider = default_provider) -> None:
        self.provider = provider

    # -- reads -------------------------------------------------------------------------
    def get(
        self, session: Session, org_id: uuid.UUID, instance_id: uuid.UUID, *, lock: bool = False
    ) -> Instance:
        instance = instance_repository.of_org(session, org_id, instance_id, lock=lock)
        if instance is None:
            raise NotFound("Instance not found.")
        return instance

    def _get_for_beat(
        self, session: Session, org_id: uuid.UUID, instance_id: uuid.UUID
    ) -> tuple[Instance, Org]:
        """The instance, locked, with its org read beside it (not locked): the cap checks
        read the org, and this way it costs no statement of its own."""
        pair = instance_repository.lock_for_beat(session, org_id, instance_id)
        if pair is None:
            raise NotFound("Instance not found.")
        return pair

    def list(
        self, session: Session, org_id: uuid.UUID, *, state: State | None = None, limit: int = 500
    ) -> Sequence[Instance]:
        return instance_repository.list_of_org(session, org_id, state=state, limit=limit)

    def running_count(self, session: Session, org_id: uuid.UUID) -> int:
        return instance_repository.count_running(session, org_id)

    def has_running(self, session: Session) -> bool:
        """Whether any org has a running instance."""
        return instance_repository.has_running(session)

    # -- commands ----------------------------------------------------------------------
    def create(
        self,
        session: Session,
        org_id: uuid.UUID,
        *,
        tier: str,
        name: str | None,
        catalog: Catalog,
        now: datetime,
    ) -> Instance:
        org = account_service.get_org(session, org_id, lock=True)
        if not catalog.has_tier(tier):
            raise Unprocessable(
                f"Unknown tier {tier!r}: choose one of {', '.join(catalog.tier_ids)}."
            )
        plan = catalog.plan(org.plan_id)
        if not plan.allows_tier(tier):
            raise Forbidden(
                f"The {tier} tier is not included in the {plan.name} plan "
                f"(it allows: {', '.join(plan.tiers)}). Upgrade your plan to use it."
            )
        self._check_can_run(session, org, now, catalog)
        instance = Instance(
            org_id=org.id,
            name=name or f"{tier}-{now:%Y%m%d%H%M%S}",
            tier=tier,
            state=State.PENDING.value,
            reason=None,
            created_at=now,
            state_changed_at=now,
            run_started_at=None,
            last_seen_at=now,
            last_active_at=now,
            stopped_at=None,
        )
        session.add(instance)
        session.flush()
        self.provider.provision(instance)
        self._move(session, instance, org, State.RUNNING, None, now=now, catalog=catalog)
        return instance

    def pause(
        self,
        session: Session,
        org_id: uuid.UUID,
        instance_id: uuid.UUID,
        *,
        reason: Reason = Reason.USER,
        catalog: Catalog,
        now: datetime,
    ) -> Instance:
        self.apply_due_changes(session, org_id, catalog=catalog, now=now)
        instance = self.get(session, org_id, instance_id, lock=True)
        return self._halt(session, instance, State.PAUSED, reason, catalog=catalog, now=now)

    def resume(
        self,
        session: Session,
        org_id: uuid.UUID,
        instance_id: uuid.UUID,
        *,
        catalog: Catalog,
        now: datetime,
    ) -> Instance:
        org = account_service.get_org(session, org_id, lock=True)
        instance = self.get(session, org_id, instance_id, lock=True)
        self._require(instance, State.RUNNING)
        plan = catalog.plan(org.plan_id)
        if not plan.allows_tier(instance.tier):
            raise Forbidden(
                f"The {instance.tier} tier is not included in the {plan.name} plan; "
                "upgrade your plan to resume this instance."
            )
        self._check_can_run(session, org, now, catalog)
        self._move(session, instance, org, State.RUNNING, None, now=now, catalog=catalog)
        self.provider.resume(instance)
        return instance

    def stop(
        self,
        session: Session,
        org_id: uuid.UUID,
        instance_id: uuid.UUID,
        *,
        reason: Reason = Reason.USER,
        catalog: Catalog,
        now: datetime,
    ) -> Instance:
        self.apply_due_changes(session, org_id, catalog=catalog, now=now)
        instance = self.get(session, org_id, instance_id, lock=True)
        return self._halt(session, instance, State.STOPPED, reason, catalog=catalog, now=now)

    def heartbeat(
        self,
        session: Session,
        org_id: uuid.UUID,
        instance_id: uuid.UUID,
        *,
        active: bool,
        source: str | None = None,
        catalog: Catalog,
        now: datetime,
        timeout: timedelta | None = None,
    ) -> Beat:
        """Record a sign of life (and of activity, with what was active); a running instance
        that has reached a cap pauses at once, its usage closed at the cap's moment.

        A beat that comes after the heartbeat timeout should have fired (the sweep was late)
        applies that timeout first: the instance stops, its usage ends at its last beat (or
        an earlier cap), and the gap is never billed (pass `timeout`)."""
        instance, org = self._get_for_beat(session, org_id, instance_id)
        if instance.state == State.STOPPED.value:
            raise Conflict(
                f"Instance {instance.id} is stopped ({instance.reason}); "
                "it no longer accepts heartbeats. Create a new instance."
            )
        if timeout is not None and self.timed_out(instance, now, timeout):
            self.stop_timed_out(session, instance, catalog=catalog, now=now)
            return Beat(instance)
        instance.last_seen_at = max(instance.last_seen_at, now)
        beat = Beat(instance)
        if instance.state == State.RUNNING.value and cap_checks:
            # Caps are judged before this beat's activity counts: activity reported now
            # cannot undo an idle timeout that was due before it (the sweep may run late).
            beat = self._check_caps(session, instance, org, catalog=catalog, now=now)
        if active and now >= instance.last_active_at:
            instance.last_active_at = now
            instance.last_active_source = source
        session.flush()
        return beat

    def quick_heartbeat(
        self,
        conn: StatementConnection,
        token_hash: str,
        instance_id: uuid.UUID,
        *,
        active: bool,
        source: str | None,
        catalog: Catalog,
        now: datetime,
        timeout: timedelta,
    ) -> dict[str, Any] | None:
        """The common heartbeat as one statement that authenticates as it writes (the
        instance's row, as written), or None when the beat must take the full way
        (`account_service.authenticate`, then `heartbeat`) and nothing was written.

        It writes only what `heartbeat` would: the beat of a live org token (by its hash)
        for an instance of that live org, not stopped, not past the heartbeat `timeout`, and,
        when it runs, meeting every cap check's quiet condition (`quiet_clauses`): the beat
        pauses nothing. Anything else, rare, is left to the full way: unknown or refused
        tokens and ids, stopped instances, a late sweep, a cap that may be reached. PostgreSQL
        only (None on SQLite), on a `kit.db.statement_connection`: it commits as it runs."""
        if conn.dialect.name != "postgresql":
            return None  # before any of the work below: SQLite beats always go the full way
        quiet: list[ColumnElement[bool]] = []
        params: dict[str, object] = {}
        for check in cap_checks:
            clause_of = quiet_clauses.get(check)
            if clause_of is None:
                return None
            clause, bound = clause_of(catalog, now)
            quiet.append(clause)
            params.update(bound)
        return instance_repository.quick_beat(
            conn,
            account_service.live_token_org(),
            tuple(quiet),
            {
                **params,
                "token_hash": token_hash,
                "instance_id": instance_id,
                "active": active,
                "source": source,
                "now": now,
                "seen_after": now - timeout,
            },
        )

    def _check_caps(
        self, session: Session, instance: Instance, org: Org, *, catalog: Catalog, now: datetime
    ) -> Beat:
        if org.deleted_at is not None:
            raise NotFound("Organization not found.")
        for check in cap_checks:
            reached = check(session, org, instance, now, catalog)
            if reached is not None:
                at, cap = reached
                if self._change_due_before(session, org.id, at, now):
                    # The org's due plan change must be applied before this run's usage
                    # closes, and the instance is locked already (org → instance order):
                    # the cap sweep applies the change, then pauses. No minute past the cap
                    # is recorded meanwhile (metering's limiters).
                    return Beat(instance)
                self.system_transition(
                    session,
                    instance,
                    State.PAUSED,
                    Reason(cap),
                    catalog=catalog,
                    now=now,
                    close_at=at,
                )
                return Beat(instance, paused_by=cap, cap_reached_at=at)
        return Beat(instance)

    def apply_due_changes(
        self, session: Session, org_id: uuid.UUID, *, catalog: Catalog, now: datetime
    ) -> None:
        """Apply the org's scheduled plan change if it fell due (`due_changes`); call it
        before any instance of the org is locked."""
        for hook in due_changes:
            hook(session, org_id, catalog, now)

    @staticmethod
    def _change_due_before(
        session: Session, org_id: uuid.UUID, at: datetime, now: datetime
    ) -> bool:
        return any(
            due < at for cut in metering.usage_cuts for due in cut(session, [org_id], now).values()
        )

    # -- the state machine -------------------------------------------------------------
    def _require(self, instance: Instance, to: State) -> None:
        current = State(instance.state)
        if to not in TRANSITIONS[current]:
            verb = {State.RUNNING: "resume", State.PAUSED: "pause", State.STOPPED: "stop"}
            raise Conflict(
                f"Cannot {verb.get(to, to.value)} instance {instance.id}: it is {current.value}"
                + (f" ({instance.reason})" if instance.reason else "")
                + "."
            )

    def _check_can_run(self, session: Session, org: Org, now: datetime, catalog: Catalog) -> None:
        plan = catalog.plan(org.plan_id)
        if self.running_count(session, org.id) >= plan.max_running_instances:
            raise Conflict(
                f"Your {plan.name} plan allows {plan.max_running_instances} running instances "
                "and that many are running. Pause or stop one first, or upgrade your plan."
            )
        for check in run_checks:
            check(session, org, now, catalog)

    def _move(
        self,
        session: Session,
        instance: Instance,
        org: Org,
        to: State,
        reason: Reason | None,
        *,
        now: datetime,
        catalog: Catalog,
        close_at: datetime | None = None,
    ) -> None:
        """Apply one transition and the usage it produces, in the caller's transaction."""
        self._require(instance, to)
        before = State(instance.state)
        if before == State.RUNNING:
            metering_service.close_segments(
                session, org, [(instance, close_at or now)], catalog=catalog, now=now
            )
        self._set_state(session, instance, before, to, reason, now=now)
        session.flush()

    def _set_state(
        self,
        session: Session,
        instance: Instance,
        before: State,
        to: State,
        reason: Reason | None,
        *,
        now: datetime,
    ) -> None:
        """The state change itself, once the usage of a run that ends is closed."""
        if before == State.RUNNING:
            instance.run_started_at = None
        if to == State.RUNNING:
            metering_service.open_segment(session, instance, at=now)
            instance.run_started_at = now
            # Starting is a sign of life: the heartbeat and idle clocks start here.
            instance.last_seen_at = max(instance.last_seen_at, now)
            instance.last_active_at = max(instance.last_active_at, now)
        instance.state = to.value
        instance.reason = reason.value if reason else None
        instance.state_changed_at = now
        label = instance.reason or "none"
        if to == State.STOPPED:
            instance.stopped_at = now
            on_commit(session, metrics.instances_stopped_total.labels(label).inc)
        elif to == State.PAUSED:
            on_commit(session, metrics.instances_paused_total.labels(label).inc)
            if reason == Reason.IDLE:
                on_commit(session, metrics.idle_instances_reaped_total.inc)
        session.add(
            InstanceEvent(
                instance_id=instance.id,
                org_id=instance.org_id,
                from_state=before.value,
                to_state=to.value,
                reason=instance.reason,
                at=now,
            )
        )

    def halt_many(
        self,
        session: Session,
        org: Org,
        halts: Sequence[tuple[Instance, Reason, datetime]],
        *,
        to: State,
        catalog: Catalog,
        now: datetime,
    ) -> None:
        """Pause or stop several locked instances of one org (a cap, the org's deletion),
        each closing its usage at its own moment, in one allocation."""
        for instance, _, _ in halts:
            self._require(instance, to)
        running = [(i, at) for i, _, at in halts if i.state == State.RUNNING.value]
        metering_service.close_segments(session, org, running, catalog=catalog, now=now)
        for instance, reason, _ in halts:
            self._set_state(session, instance, State(instance.state), to, reason, now=now)
            if to == State.PAUSED:
                self.provider.pause(instance)
            else:
                self.provider.terminate(instance)
        session.flush()

    def system_transition(
        self,
        session: Session,
        instance: Instance,
        to: State,
        reason: Reason,
        *,
        catalog: Catalog,
        now: datetime,
        close_at: datetime | None = None,
    ) -> None:
        """A pause or stop decided by the service (caps, timeouts); the instance is locked."""
        self._halt(session, instance, to, reason, catalog=catalog, now=now, close_at=close_at)

    def _halt(
        self,
        session: Session,
        instance: Instance,
        to: State,
        reason: Reason,
        *,
        catalog: Catalog,
        now: datetime,
        close_at: datetime | None = None,
    ) -> Instance:
        """Pause or stop a locked instance, closing its usage at `close_at` (default now)."""
        # A deleted org's leftover instances must still stop and close their usage.
        org = account_service.get_org(session, instance.org_id, include_deleted=True)
        self._move(session, instance, org, to, reason, now=now, catalog=catalog, close_at=close_at)
        if to == State.PAUSED:
            self.provider.pause(instance)
        else:
            self.provider.terminate(instance)
        return instance

    # -- heartbeat timeout (the sweep is in instances.sweeps) ----------------------------
    @staticmethod
    def timed_out(instance: Instance, now: datetime, timeout: timedelta) -> bool:
        return instance.state == State.RUNNING.value and instance.last_seen_at < now - timeout

    def stop_timed_out(
        self, session: Session, instance: Instance, *, catalog: Catalog, now: datetime
    ) -> None:
        # Usage ends at the last beat however late the stop comes: dead time is never billed.
        self.system_transition(
            session,
            instance,
            State.STOPPED,
            Reason.HEARTBEAT_TIMEOUT,
            catalog=catalog,
            now=now,
            close_at=instance.last_seen_at,
        )


instance_service = InstanceService()
