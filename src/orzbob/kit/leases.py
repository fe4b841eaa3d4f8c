"""Keeping a lease alive while the work it covers is in flight (the flusher's records, the
alert sender's messages): a thread renews it every third of its length until the work ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

log = logging.getLogger(__name__)


@contextmanager
def renewing(renew: Callable[[], None], lease: timedelta, *, name: str) -> Iterator[None]:
    """Call `renew` every third of `lease` until the block ends; a failed renewal (the
    database briefly away) is logged and tried again next time."""
    stop = threading.Event()
    every = max(0.05, lease.total_seconds() / 3)

    def loop() -> None:
        while not stop.wait(every):
            try:
                renew()
            except Exception:  # try again next time; the lease is still a third from lapsing
                log.warning("could not renew the %s lease", name, exc_info=True)

    thread = threading.Thread(target=loop, name=f"{name}-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
