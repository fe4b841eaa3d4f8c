"""The seed's verification scripts exist, `make verify` runs each, and a failure anywhere
in one makes it exit non-zero (the scripts themselves run on demand with `make verify`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = [
    "billing-secrets",
    "metering",
    "usage-emission",
    "budget-alerts",
    "throttle",
    "cli-dashboard",
    "docs-support",
]


def test_every_seed_script_exists_and_make_verify_runs_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^VERIFY := (.+)$", makefile, re.M)
    assert listed and listed.group(1).split() == SEED
    for name in SEED:
        script = ROOT / "hack" / f"verify-{name}.sh"
        assert os.access(script, os.X_OK), script
        text = script.read_text()
        assert 'source "$(dirname "$0")/lib/verify.sh"' in text
        assert "run_tests tests/" in text, f"{name} runs no tests"
        assert "start_service" in text, f"{name} has no smoke run against a started service"
        tested = re.findall(r"\btests/[\w/.]+", text)
        for path in tested:
            assert (ROOT / path).exists(), path


def _bash(snippet: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source hack/lib/verify.sh; {snippet}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_failing_tests_and_failed_checks_exit_non_zero() -> None:
    failed = _bash("run_tests tests/does_not_exist.py; echo unreachable")
    assert failed.returncode != 0 and "unreachable" not in failed.stdout
    assert "FAILED: tests failed" in failed.stderr
    died = _bash('die "the queue did not drain"; echo unreachable')
    assert died.returncode == 1 and "FAILED: the queue did not drain" in died.stderr
    assert _bash('say "fine"').returncode == 0
