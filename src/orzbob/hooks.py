"""Where higher domains register with the hooks lower ones offer (usage written → caps and
alerts; a heartbeat, a start or a resume → cap checks; a spend limit changed → alerts; an
org deleted → its instances stop; a plan change → usage cut and periods kept). Called once
per process by the app and by the job runner; registering again changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from orzbob.accounts import service as accounts
from orzbob.alerts.evaluator import alert_evaluator
from orzbob.credits.balance import credits_for_period
from orzbob.instances import bulk, liveness
from orzbob.instances import service as instances
from orzbob.instances.sweeps import sweep_service
from orzbob.metering import service as metering
from orzbob.polar.subscriptions import subscription_service
from orzbob.quota import plan_changes
from orzbob.quota import service as quota
from orzbob.throttle.service import throttle_service
from orzbob.throttle.status import throttle_status

F = TypeVar("F", bound=Callable[..., object])


def _register(hooks: list[F], fn: F) -> None:
    if fn not in hooks:
        hooks.append(fn)


def install_hooks() -> None:
    _register(metering.limiters, throttle_service.limits)
    # Metering counts running time only up to the instance's last sign of life.
    _register(metering.last_seen_hooks, liveness.last_seen_of)
    _register(instances.run_checks, throttle_status.check_can_run)
    _register(instances.cap_checks, throttle_service.cap_check)
    instances.quiet_clauses.setdefault(throttle_service.cap_check, throttle_service.quiet_beat)
    _register(bulk.bulk_cap_checks, throttle_service.bulk_cap_check)
    # The quota status applies credits (granted above quota, in the credits domain).
    _register(quota.credit_providers, credits_for_period)
    # Alerts: thresholds evaluated in the transaction that writes usage; spend thresholds
    # re-armed (or raised) in the one that changes the limit.
    _register(metering.usage_recorded_hooks, alert_evaluator.on_usage_recorded)
    _register(quota.spend_limit_hooks, alert_evaluator.on_spend_limit_changed)
    # Deleting an org stops its instances in the same transaction (reason `admin`).
    _register(accounts.org_deleting_hooks, sweep_service.stop_org_instances)
    # A plan change is a usage boundary: usage up to it is recorded under the old plan
    # (segments, then periods), then each period's plan is kept and exhaustion recomputed.
    _register(accounts.plan_changing_hooks, metering.metering_service.record_until)
    _register(accounts.plan_changing_hooks, plan_changes.keep_past_plans)
    _register(accounts.plan_changed_hooks, plan_changes.apply_new_plan)
    # A scheduled change that fell due holds usage back until it is applied.
    _register(metering.usage_cuts, subscription_service.due_cuts)
    # ... and a pause, a stop or a sweep that closes usage applies that change first.
    _register(instances.due_changes, subscription_service.apply_due_change)
