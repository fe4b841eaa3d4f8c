"""Run an ASGI app under uvicorn on a background thread, or serve the local Polar server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


class _WakeableServer(uvicorn.Server):
    """uvicorn checks `should_exit` only every 100 ms; tests start and stop hundreds of
    servers, so let `stop()` wake the main loop at once."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn always pauses 100 ms for open connections to wind down; with none open
        # (the usual case when a test has closed its clients) skip straight to the end.
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def wake(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)


class ServerThread:
    """uvicorn on a daemon thread, bound to an already open socket so the port is known (and
    cannot be taken by someone else) before the server starts."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level=log_level, lifespan="auto", timeout_graceful_shutdown=5
        )
        self._server = _WakeableServer(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name=f"uvicorn-{self.port}",
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not start within {timeout} s")
            time.sleep(0.005)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.ident is None:  # never started
            self._sock.close()
            return
        self._server.should_exit = True
        self._server.wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()


@contextmanager
def run_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve `app` on `host` (a free port unless `port` is given) for the `with` block and
    yield its base URL, e.g. `http://127.0.0.1:53127`; shuts the server down on exit."""
    server = ServerThread(app, host=host, port=port, log_level=log_level)
    server.start(startup_timeout)
    try:
        yield server.url
    finally:
        server.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    db_path: str | Path = "polar-local.db",
    accept_future_timestamps: bool = False,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    control_api: bool = False,
) -> None:
    """Serve the local Polar-compatible server in the foreground until interrupted."""
    # Imported here so that tests using only the thread runner need not load the server.
    from .app import create_app

    app = create_app(
        db_path,
        accept_future_timestamps=accept_future_timestamps,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        control_api=control_api,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
