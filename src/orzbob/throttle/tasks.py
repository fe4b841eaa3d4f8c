"""The cap sweep: one set-based query finds the orgs a cap may stop, then each is enforced
in its own short transaction (one org per transaction, so locks never span two orgs)."""

from __future__ import annotations

import time

from orzbob.instances.service import instance_service
from orzbob.kit import metrics
from orzbob.kit.clock import FOREVER, Idle
from orzbob.runtime import Runtime
from orzbob.throttle.service import throttle_service


def sweep_caps(runtime: Runtime) -> int | Idle:
    """Pause every running instance a cap has reached, at the cap's moment."""
    started = time.perf_counter()
    now = runtime.clock.now()
    # Usage not yet checkpointed that could push an org past a cap: while the checkpoint
    # keeps up, at most one checkpoint interval or sweep interval, whichever is longer
    # (rounded up), plus one minute. An org with usage left uncounted for longer (the
    # checkpoint stalled or failing) is a candidate anyway (`sweep_candidates`).
    s = runtime.settings
    margin = -(-max(s.sweep_interval_seconds, s.flush_interval_seconds) // 60) + 1
    with runtime.read_session() as session:
        if not instance_service.has_running(session):
            return Idle(FOREVER)  # only a start (which wakes every job) changes that
        candidates = throttle_service.near_caps(
            session, catalog=runtime.catalog, now=now, margin_minutes=margin
        )
    paused = len(
        throttle_service.enforce_orgs(runtime.session, candidates, catalog=runtime.catalog, now=now)
    )
    metrics.cap_sweep_duration_seconds.observe(time.perf_counter() - started)
    metrics.cap_sweep_paused.observe(paused)
    metrics.cap_sweep_last_success.set_to_current_time()
    return paused
