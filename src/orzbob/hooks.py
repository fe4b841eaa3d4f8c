"""Every hook a higher domain registers with a lower one, installed in one place.

Called from `create_app` and `register_jobs`; installing twice changes nothing.
"""

from __future__ import annotations

from typing import TypeVar

from orzbob.accounts import service as accounts
from orzbob.instances.service import instance_service
from orzbob.metering import service as metering
from orzbob.polar.subscriptions import subscription_service
from orzbob.quota import plan_changes

H = TypeVar("H")


def _add(hooks: list[H], hook: H) -> None:
    if hook not in hooks:
        hooks.append(hook)


def install_hooks() -> None:
    # Deleting an org stops its instances in the same transaction (reason `admin`).
    _add(accounts.org_deleting_hooks, instance_service.stop_org_instances)
    # A plan change is a usage boundary: usage up to it is recorded under the old plan
    # (segments, then periods), then each period's plan is kept and exhaustion recomputed.
    _add(accounts.plan_changing_hooks, metering.metering_service.record_until)
    _add(accounts.plan_changing_hooks, plan_changes.keep_past_plans)
    _add(accounts.plan_changed_hooks, plan_changes.apply_new_plan)
    # A scheduled change that fell due holds usage back until it is applied.
    _add(metering.usage_cuts, subscription_service.due_cuts)
