"""Serve an ASGI app on a free local port, in a thread, for real-HTTP tests: the same runner as
the local Polar server's (bound before it starts, stopped at once)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polar_local import run_in_thread


def free_port() -> int:
    """A port nobody listens on (for tests of a service that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Yield the base URL while uvicorn serves `app` (lifespan on), then stop it."""
    with run_in_thread(app) as url:
        yield url
