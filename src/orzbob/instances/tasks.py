from __future__ import annotations

import logging
from datetime import timedelta

from orzbob.instances.sweeps import sweep_service
from orzbob.kit import metrics
from orzbob.kit.clock import FOREVER, Idle
from orzbob.runtime import Runtime

BATCH = 500
log = logging.getLogger(__name__)


def stop_silent_instances(runtime: Runtime) -> int | Idle:
    """Stop instances whose agent stopped heartbeating (reason `heartbeat_timeout`).

    One instance per transaction: a stop locks its instance, segment and org period and
    commits before the next, so sweeps never hold two orgs' locks at once (no deadlock with
    another sweep or a checkpoint), and one bad row is logged and skipped, never blocking
    the rest. Safe with several workers: each stop re-checks its instance under a
    `SKIP LOCKED` row lock.
    """
    timeout = timedelta(seconds=runtime.settings.heartbeat_timeout_seconds)
    now = runtime.clock.now()
    stopped = 0
    failed: set[object] = set()
    while True:
        with runtime.session() as session:
            ids = sweep_service.silent_candidates(
                session, now=now, timeout=timeout, limit=BATCH + len(failed)
            )
        todo = [i for i in ids if i not in failed]
        for instance_id in todo:
            try:
                with runtime.session() as session:
                    stopped += sweep_service.stop_if_silent(
                        session, instance_id, now=now, timeout=timeout, catalog=runtime.catalog
                    )
            except Exception:
                failed.add(instance_id)
                metrics.job_failures_total.labels(job="instances.heartbeat_timeout").inc()
                log.exception("heartbeat timeout: could not stop instance %s", instance_id)
        if len(todo) < BATCH:
            break
    if stopped:
        return stopped
    with runtime.session() as session:
        oldest = sweep_service.oldest_running_seen(session)
    # Nobody can time out before the stalest running instance does.
    return Idle(FOREVER if oldest is None else oldest + timeout)
