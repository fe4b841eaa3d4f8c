"""`orz cloud` end to end: the real CLI, over real HTTP, against the API in a server thread."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance
from tests.orz_runner import run_orz
from tests.serving import serve as run_in_thread


@pytest.fixture
def api_url(app: FastAPI) -> Iterator[str]:
    with run_in_thread(app) as url:
        yield url


def orz(api_url: str, token: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORZ_API_URL": api_url, "ORZ_TOKEN": token, "XDG_CONFIG_HOME": str(home)}
    return run_orz(["cloud", *args], env=env)


def test_instance_commands_agent_and_usage(
    api_url: str, runtime: Runtime, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    org = make_org()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return orz(api_url, org.token, *args, home=tmp_path)

    new = run("new", "--tier", "small", "--name", "dev", "--json")
    assert new.returncode == 0, new.stderr
    iid = json.loads(new.stdout)["id"]
    listed = json.loads(run("list", "--json").stdout)
    assert [i["id"] for i in listed] == [iid]
    advance(runtime, 90)
    beats = run("agent", iid, "--activity", "busy", "--count", "2", "--interval", "0")
    assert beats.returncode == 0 and "beat 2: running" in beats.stdout
    assert json.loads(run("pause", iid, "--json").stdout)["state"] == "paused"
    assert json.loads(run("resume", iid, "--json").stdout)["state"] == "running"
    advance(runtime, 30)
    assert "stopped" in run("kill", iid).stdout

    usage = json.loads(run("usage", "--json").stdout)
    assert usage["total_minutes"] == 2 + 1  # 90 s, then 30 s
    assert {r["instance_id"] for r in usage["records"]} == {iid}
    rows = list(csv.DictReader(io.StringIO(run("usage", "--csv").stdout)))
    assert sum(int(r["minutes"]) for r in rows) == 3

    human = run("list")
    assert "dev" in human.stdout and "stopped" in human.stdout


def test_cli_errors_are_one_clear_line(
    api_url: str, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    org = make_org()
    bad_tier = orz(api_url, org.token, "new", "--tier", "huge", home=tmp_path)
    assert bad_tier.returncode == 1
    assert "small, medium, large, gpu" in bad_tier.stderr and "HTTP 422" in bad_tier.stderr
    no_such = orz(
        api_url, org.token, "pause", "0193a3f0-0000-7000-8000-000000000000", home=tmp_path
    )
    assert no_such.returncode == 1 and "not found" in no_such.stderr
    bad_token = orz(api_url, "orz_nope", "list", home=tmp_path)
    assert bad_token.returncode == 1 and "HTTP 401" in bad_token.stderr
    down = orz("http://127.0.0.1:9", org.token, "list", home=tmp_path)
    assert down.returncode == 1 and "cannot reach" in down.stderr
    for result in (bad_tier, no_such, bad_token, down):
        assert "Traceback" not in result.stderr


def test_login_saves_credentials(
    api_url: str, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    org = make_org("Loginco")
    env = {k: v for k, v in os.environ.items() if k not in ("ORZ_TOKEN", "ORZ_API_URL")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    login = run_orz(["cloud", "--api-url", api_url, "login", "--token", org.token], env=env)
    assert login.returncode == 0 and "Loginco" in login.stdout, login.stderr
    saved = tmp_path / "orz" / "credentials.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    listed = run_orz(["cloud", "list", "--json"], env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_orz_login_at_the_top_level_saves_credentials(
    api_url: str, make_org: Callable[..., OrgHandle], tmp_path: Path
) -> None:
    """`orz login` is `orz cloud login` at the top level (the README's first steps)."""
    org = make_org("Toplevel")
    env = {k: v for k, v in os.environ.items() if k not in ("ORZ_TOKEN", "ORZ_API_URL")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    login = run_orz(["login", "--api-url", api_url, "--token", org.token], env=env)
    assert login.returncode == 0 and "Toplevel" in login.stdout, login.stderr
    listed = run_orz(["cloud", "list", "--json"], env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    env["ORZ_API_URL"] = api_url
    again = run_orz(["login", "--token", org.token], env=env)
    assert again.returncode == 0 and "Toplevel" in again.stdout, again.stderr
