"""Fixtures shared by the hot routes' tests."""

from __future__ import annotations

import pytest

from orzbob.accounts import service as accounts


@pytest.fixture(params=["cached", "uncached"])
def cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with the token cache on (emptied first), and with it off."""
    if request.param == "uncached":
        monkeypatch.setattr(accounts.token_cache, "ttl", 0.0)
    else:
        accounts.token_cache.clear()
    return str(request.param)
