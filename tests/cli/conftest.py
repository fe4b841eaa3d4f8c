"""CLI fixtures: the API served over real HTTP on a free port, and `orz` invoked against it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from fastapi import FastAPI
from typer.testing import CliRunner

from orzbob.cli.common import console, err_console
from orzbob.cli.main import app as orz
from tests.serving import serve

Invoke = Callable[..., Result]


@pytest.fixture
def api_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich measures the terminal of whoever runs pytest; output under test must not."""
    for c in (console, err_console):
        monkeypatch.setattr(c, "_width", 160)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    # No saved credentials or ambient tokens: every call says which token it uses.
    return {"XDG_CONFIG_HOME": str(tmp_path), "ORZ_TOKEN": "", "ORZ_STAFF_TOKEN": ""}


@pytest.fixture
def cli(api_url: str, cli_env: dict[str, str]) -> Invoke:
    runner = CliRunner()

    def invoke(group: str, token: str, *args: str) -> Result:
        return runner.invoke(
            orz, [group, "--api-url", api_url, "--token", token, *args], env=cli_env
        )

    return invoke


@pytest.fixture
def orz_db(db_url: str, cli_env: dict[str, str]) -> Invoke:
    """`orz` commands that work straight against the test database."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(
            orz, list(args), env={**cli_env, "DATABASE_URL": db_url, **(env or {})}
        )

    return invoke
