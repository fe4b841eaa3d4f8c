"""Every periodic job, registered in the order they must observe each other."""

from __future__ import annotations

from orzbob.runtime import Runtime


def register_jobs(runtime: Runtime) -> None:
    """Register the periodic jobs of every domain on the runtime's scheduler.

    Order matters when several fall due at the same instant: usage is checkpointed before it
    is flushed and before caps and alerts look at it.
    """
    del runtime  # domains add their jobs here as they arrive
