"""The background uvicorn runner, with a plain ASGI app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from polar_local import ServerThread, run_in_thread


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_serves_until_the_block_ends() -> None:
    with run_in_thread(hello) as url, run_in_thread(hello) as other:
        answer = httpx.get(f"{url}/ping")
        assert url.startswith("http://127.0.0.1:")
        assert url != other

    assert answer.text == "/ping"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/ping")


def test_server_thread_start_and_stop() -> None:
    server = ServerThread(hello)
    url = server.start()
    try:
        assert httpx.get(f"{url}/x").status_code == 200
    finally:
        server.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/x")
