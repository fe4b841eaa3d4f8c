"""Every hook a higher domain registers with a lower one, installed in one place.

Called from `create_app` and `register_jobs`; installing twice changes nothing.
"""

from __future__ import annotations

from typing import TypeVar

from orzbob.accounts import service as accounts
from orzbob.instances.service import instance_service

H = TypeVar("H")


def _add(hooks: list[H], hook: H) -> None:
    if hook not in hooks:
        hooks.append(hook)


def install_hooks() -> None:
    # Deleting an org stops its instances in the same transaction (reason `admin`).
    _add(accounts.org_deleting_hooks, instance_service.stop_org_instances)
