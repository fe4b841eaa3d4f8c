"""Where higher domains register with the hooks lower domains offer (one place, idempotent).

Called from `create_app` and `register_jobs`, so every process that writes usage or serves
the API has them; calling it again changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orzbob.alerts.evaluator import alert_evaluator
from orzbob.alerts.service import alert_service
from orzbob.quota import allocation
from orzbob.quota import service as quota


def _register(hooks: list[Any], fn: Callable[..., None]) -> None:
    if fn not in hooks:
        hooks.append(fn)


def install_hooks() -> None:
    # Alerts: evaluated in the usage transaction; re-armed when a spend limit changes;
    # the latest one shown in the billing object.
    _register(allocation.usage_recorded_hooks, alert_evaluator.on_usage_recorded)
    _register(quota.spend_limit_hooks, alert_evaluator.on_spend_limit_changed)
    _register(quota.status_hooks, alert_service.add_last_alert)
