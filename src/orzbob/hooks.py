"""Where higher domains register with the hooks lower ones offer (usage written → caps and
alerts; a heartbeat, a start or a resume → cap checks; a spend limit changed → alerts).
Called once per process by the app and by the job runner; registering again changes
nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from orzbob.alerts.evaluator import alert_evaluator
from orzbob.instances import service as instances
from orzbob.metering import service as metering
from orzbob.quota import allocation
from orzbob.quota import service as quota
from orzbob.throttle.service import throttle_service

F = TypeVar("F", bound=Callable[..., object])


def _register(hooks: list[F], fn: F) -> None:
    if fn not in hooks:
        hooks.append(fn)


def install_hooks() -> None:
    _register(metering.limiters, throttle_service.limits)
    _register(instances.run_checks, throttle_service.check_can_run)
    _register(instances.cap_checks, throttle_service.cap_check)
    # Alerts: thresholds evaluated in the transaction that writes usage; spend thresholds
    # re-armed (or raised) in the one that changes the limit.
    _register(allocation.usage_recorded_hooks, alert_evaluator.on_usage_recorded)
    _register(quota.spend_limit_hooks, alert_evaluator.on_spend_limit_changed)
