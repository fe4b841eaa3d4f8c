from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from orzbob.instances.models import Instance, State
from orzbob.instances.service import instance_service
from orzbob.kit.clock import FOREVER, Idle
from orzbob.runtime import Runtime

BATCH = 500


def stop_silent_instances(runtime: Runtime) -> int | Idle:
    """Stop instances whose agent stopped heartbeating (reason `heartbeat_timeout`)."""
    timeout = timedelta(seconds=runtime.settings.heartbeat_timeout_seconds)
    now = runtime.clock.now()
    stopped = 0
    while True:
        with runtime.session() as session:
            n = instance_service.stop_silent(
                session, now=now, timeout=timeout, catalog=runtime.catalog, limit=BATCH
            )
        stopped += n
        if n < BATCH:
            break
    if stopped:
        return stopped
    with runtime.session() as session:
        oldest = session.scalar(
            select(func.min(Instance.last_seen_at)).where(Instance.state == State.RUNNING.value)
        )
    # Nobody can time out before the stalest running instance does.
    return Idle(FOREVER if oldest is None else oldest + timeout)
