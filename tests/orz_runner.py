"""`orz` in-process with Typer's CliRunner: the same commands, output and exit codes as the
console script without starting an interpreter per call. Only the tests that prove the installed
script works (tests/cli/test_console_script.py) start a process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from typer.testing import CliRunner

from orzbob.cli.main import app


def run_orz(
    args: Sequence[str], *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `orz ARGS`; `env` is the whole environment of the call, as for a subprocess
    (variables missing from it are unset for the call)."""
    overrides: dict[str, str | None] = {}
    if env is not None:
        overrides = {key: None for key in os.environ if key not in env}
        overrides.update(env)
    result = CliRunner().invoke(app, list(args), env=overrides)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(
        ["orz", *args], result.exit_code, result.stdout, result.stderr
    )
