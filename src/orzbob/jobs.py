"""Every periodic job, registered in the order they must observe each other."""

from __future__ import annotations

from orzbob.instances.tasks import stop_silent_instances
from orzbob.metering.tasks import checkpoint_open_segments
from orzbob.runtime import Runtime


def register_jobs(runtime: Runtime) -> None:
    """Register the periodic jobs of every domain on the runtime's scheduler.

    Order matters when several fall due at the same instant: usage is checkpointed before it
    is flushed and before caps and alerts look at it.
    """
    s = runtime.settings
    runtime.every("metering.checkpoint", s.flush_interval_seconds, checkpoint_open_segments)
    runtime.every("instances.heartbeat_timeout", s.sweep_interval_seconds, stop_silent_instances)
