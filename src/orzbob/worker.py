"""`orz worker`: the periodic jobs without the HTTP API.

Run one or several next to API replicas (`ORZBOB_RUN_JOBS=false`) on one PostgreSQL
database; every job is safe with several workers (see `orzbob.jobs`). Under the test clock a
worker follows the clock the API persists, running each job that falls due on the way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy.exc import OperationalError

from orzbob.jobs import register_jobs
from orzbob.kit.clock import Scheduler
from orzbob.kit.metrics import REGISTRY
from orzbob.runtime import Runtime
from orzbob.testclock import control as testclock_control

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.05
RETRY_SECONDS = 1.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape or probe on stderr."""


def serve_metrics(
    port: int,
    host: str = "0.0.0.0",
    *,
    scheduler: Scheduler | None = None,
    stuck_seconds: float = 900,
) -> int:
    """Serve /metrics of this process (the same registry the API exports) on `port`, and
    /healthz, the liveness probe's: 200 unless a job of `scheduler` has run for longer than
    `stuck_seconds` (503, naming it). Returns the port bound (0 picks a free one)."""
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics_app(environ, start_response)
        stuck = None if scheduler is None else scheduler.stuck(stuck_seconds)
        if stuck is None:
            status, body = "200 OK", b"ok\n"
        else:
            status = "503 Service Unavailable"
            body = f"job {stuck[0]} has run for {stuck[1]:.0f} s\n".encode()
        start_response(
            status,
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return int(server.server_port)


def run_worker(runtime: Runtime, stop: threading.Event) -> None:
    """Run the jobs until `stop` is set, then run the shutdown hooks (a last flush)."""
    if runtime.settings.metrics_port is not None:
        port = serve_metrics(
            runtime.settings.metrics_port,
            scheduler=runtime.scheduler,
            stuck_seconds=runtime.settings.job_stuck_seconds,
        )
        log.info("worker metrics at http://0.0.0.0:%d/metrics, liveness at /healthz", port)
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
