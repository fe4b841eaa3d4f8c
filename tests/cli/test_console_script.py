"""The few checks that need the installed console script or a fresh interpreter; every other CLI
test runs `orz` in-process (tests/orz_runner.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.orz_runner import run_orz

ORZ = Path(sys.executable).with_name("orz")


def test_the_installed_script_runs_the_customer_commands() -> None:
    for args in (["cloud", "--help"], ["login", "--help"]):
        proc = subprocess.run(
            [str(ORZ), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert "Usage: orz" in proc.stdout


def test_orz_cloud_loads_neither_sqlalchemy_nor_the_models() -> None:
    probe = (
        "import sys\n"
        "from orzbob.cli.main import app\n"
        "sys.argv = ['orz', 'cloud', 'list', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('sqlalchemy', 'orzbob.models', 'orzbob.runtime', 'typer.rich_utils')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip().endswith("HEAVY="), out[-300:]


def test_every_command_group_is_listed_and_loads() -> None:
    listed = run_orz(["--help"])
    assert listed.returncode == 0
    names = [
        "db",
        "server",
        "worker",
        "dev",
        "login",
        "cloud",
        "admin",
        "metering",
        "polar",
        "support",
        "demo",
        "alerts",
    ]
    for name in names:
        assert f" {name} " in listed.stdout, name
        sub = run_orz([name, "--help"])
        assert sub.returncode == 0, (name, sub.stderr)
    assert "alerts" in run_orz(["support", "--help"]).stdout
    assert "mail" in run_orz(["dev", "--help"]).stdout


def test_without_the_local_polar_server_the_dev_commands_say_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "polar_local", None)  # as in a production install
    result = run_orz(["polar", "serve-local", "--db", str(tmp_path / "p.db")])
    assert result.returncode == 1
    assert "not installed here" in result.stderr and "Traceback" not in result.stderr
