from __future__ import annotations

from datetime import timedelta

from orzbob.instances.service import instance_service
from orzbob.runtime import Runtime

BATCH = 500


def stop_silent_instances(runtime: Runtime) -> int:
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
            return stopped
