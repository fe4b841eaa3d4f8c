"""Where higher domains register with the hooks lower ones offer (usage written → caps and
alerts; a heartbeat, a start or a resume → cap checks). Called once per process by the app
and by the job runner; registering again changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from orzbob.instances import service as instances
from orzbob.metering import service as metering
from orzbob.throttle.service import throttle_service

F = TypeVar("F", bound=Callable[..., object])


def _register(hooks: list[F], fn: F) -> None:
    if fn not in hooks:
        hooks.append(fn)


def install_hooks() -> None:
    _register(metering.limiters, throttle_service.limits)
    _register(instances.run_checks, throttle_service.check_can_run)
    _register(instances.cap_checks, throttle_service.cap_check)
