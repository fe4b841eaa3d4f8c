"""The CLI on hostile data and broken set-ups: server and database text is printed as text
(never Rich markup, controls escaped), and every error is one clear line with no traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from fastapi.testclient import TestClient

from orzbob.billing.service import billing_service
from tests.cli.conftest import Invoke
from tests.conftest import OrgHandle
from tests.serving import free_port

HOSTILE = ["[/]", "[bold]x", "\u001b[2J", "\u001b]0;pwned\u0007 title", "x\u202egnp.exe"]
# How each name must appear on screen: markup verbatim, control characters as escapes.
SHOWN = ["[/]", "[bold]x", "\\x1b[2J", "\\x1b]0;pwned\\x07 title", "x\\u202egnp.exe"]


def _clean(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\u202e" not in result.output


@pytest.mark.parametrize(("name", "shown"), list(zip(HOSTILE, SHOWN, strict=True)))
def test_hostile_org_names_print_literally_everywhere(
    name: str,
    shown: str,
    cli: Invoke,
    orz_db: Invoke,
    client: TestClient,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
) -> None:
    org = make_org("placeholder", plan="base-plus-usage")
    # An org admin renames the org, as the report describes.
    r = client.patch("/v1/orgs/me", headers=org.headers, json={"name": name})
    assert r.status_code == 200 and r.json()["name"] == name
    client.post("/v1/instances", headers=org.headers, json={"tier": "small", "name": name})
    staff = staff_headers("support_l1")["Authorization"].removeprefix("Bearer ")

    outputs = {
        "cloud billing": cli("cloud", org.token, "billing"),
        "cloud list": cli("cloud", org.token, "list"),
        "cloud login": cli("cloud", org.token, "login", "--token", org.token),
        "support billing": cli("support", staff, "billing", "--org", str(org.id)),
        "admin org list": orz_db("admin", "org", "list"),
        "admin org show": orz_db("admin", "org", "show", str(org.id)),
        "admin org create": orz_db("admin", "org", "create", "--name", name, "--email", "a@b.co"),
    }
    for command, result in outputs.items():
        _clean(result)
        assert shown in result.stdout, f"{command}: {result.stdout!r}"
    # --json keeps the exact string (JSON escapes it).
    body = json.loads(cli("cloud", org.token, "billing", "--json").stdout)
    assert body["organization"] == name


def _one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_api_error_paths_are_one_clear_line(
    cli: Invoke,
    cli_env: dict[str, str],
    api_url: str,
    make_org: Callable[..., OrgHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from orzbob.cli.main import app as orz

    runner = CliRunner()
    org = make_org(plan="base-plus-usage")

    bad_url = runner.invoke(
        orz, ["cloud", "billing"], env={**cli_env, "ORZ_API_URL": "http://[::1", "ORZ_TOKEN": "t"}
    )
    _one_line_error(bad_url, "http://[::1", "not a valid")

    _one_line_error(cli("cloud", "tökén", "billing"), "token")
    _one_line_error(
        runner.invoke(orz, ["cloud", "--api-url", api_url, "billing"], env=cli_env),
        "not logged in",
    )
    _one_line_error(cli("cloud", "orz_wrong", "billing"), "refused", "HTTP 401")

    down = f"http://127.0.0.1:{free_port()}"
    _one_line_error(
        runner.invoke(orz, ["cloud", "--api-url", down, "--token", "t", "billing"], env=cli_env),
        f"cannot reach the Orzbob API at {down}",
    )

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(billing_service, "read", boom)
    line = _one_line_error(cli("cloud", org.token, "billing"), "server error", "HTTP 500")
    request_id = line.rsplit("request id ", 1)[1].rstrip(")")
    assert len(request_id) == 32 and request_id != "none"


def test_database_error_paths_are_one_clear_line(orz_db: Invoke, tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("hello, this is not SQLite\n" * 100)
    cases = {
        f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/orz": (
            "cannot use the database at postgresql+psycopg://postgres:***@127.0.0.1"
        ),
        "oracle+nothing://x/y": "cannot be used",
        "not a url at all": "cannot be used",
        f"sqlite:///{tmp_path}/missing/dir/orz.db": "does its directory exist?",
        f"sqlite:///{not_a_db}": "file is not a database",
    }
    for url, needle in cases.items():
        result = orz_db("admin", "org", "list", env={"DATABASE_URL": url})
        assert "secret" not in _one_line_error(result, needle)
        if "missing" not in url:  # `orz db upgrade` makes a missing directory, by design
            result = orz_db("db", "upgrade", env={"DATABASE_URL": url})
            assert "secret" not in _one_line_error(result, needle)
    # ...unless it cannot: a "directory" that is a file.
    result = orz_db("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{not_a_db}/orz.db"})
    _one_line_error(result, f"cannot use {not_a_db}")


def test_an_unexpected_answer_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A server that answers 200 with something else than a billing object (a wrong
    ORZ_API_URL, a broken proxy): the last-resort handler still prints one line."""
    import os
    import subprocess
    import sys

    from fastapi import FastAPI

    from tests.serving import serve

    odd = FastAPI()
    odd.get("/v1/billing")(lambda: {"hello": "world"})
    with serve(odd) as url:
        env = {**os.environ, "ORZ_API_URL": url, "ORZ_TOKEN": "t", "XDG_CONFIG_HOME": str(tmp_path)}
        env.pop("ORZ_DEBUG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "orzbob.cli", "cloud", "billing"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected KeyError"), proc.stderr
