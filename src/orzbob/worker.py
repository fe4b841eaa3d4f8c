"""`orz worker`: the periodic jobs without the HTTP API.

Run one or several next to API replicas (`ORZBOB_RUN_JOBS=false`) on one PostgreSQL
database; every job is safe with several workers (see `orzbob.jobs`). Under the test clock a
worker follows the clock the API persists, running each job that falls due on the way.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server
from sqlalchemy.exc import OperationalError

from orzbob.jobs import register_jobs
from orzbob.kit.metrics import REGISTRY
from orzbob.runtime import Runtime
from orzbob.testclock import control as testclock_control

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.05
RETRY_SECONDS = 1.0


def serve_metrics(port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics of this process (the same registry the API exports) on `port`;
    returns the port bound (0 picks a free one)."""
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)


def run_worker(runtime: Runtime, stop: threading.Event) -> None:
    """Run the jobs until `stop` is set, then run the shutdown hooks (a last flush)."""
    if runtime.settings.metrics_port is not None:
        port = serve_metrics(runtime.settings.metrics_port)
        log.info("worker metrics at http://0.0.0.0:%d/metrics", port)
    register_jobs(runtime)
    names = ", ".join(j.name for j in runtime.scheduler.jobs)
    log.info("worker %s running jobs: %s", runtime.settings.worker_id or "(unnamed)", names)
    try:
        if runtime.settings.test_clock:
            testclock_control.share(runtime)
            testclock_control.restore(runtime)
            while not stop.is_set():
                try:
                    moved = testclock_control.follow(runtime)
                except OperationalError as exc:
                    # The database dropped the connection (restart, failover): the pool
                    # renews it; the jobs that were due run on the next follow.
                    log.warning("worker: database unavailable, retrying: %s", exc.orig)
                    stop.wait(RETRY_SECONDS)
                    continue
                if not moved:
                    stop.wait(FOLLOW_SECONDS)
        else:
            runtime.scheduler.run_forever(stop)
    finally:
        for hook in runtime.shutdown_hooks:
            hook()
        log.info("worker stopped")
