"""Start-up time of the customer CLI: `orz cloud --help` and `orz login --help` as a customer
runs them (the installed console script, a fresh interpreter each time), and which heavy
modules they load. The budget is 0.3 s; the figure is the median of several runs, because
the first one pays for a cold disk cache."""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import record, row

BUDGET_SECONDS = 0.3
HEAVY = ("sqlalchemy", "orzbob.models", "orzbob.runtime", "fastapi", "typer.rich_utils")


def _orz() -> list[str]:
    script = Path(sys.executable).with_name("orz")
    if script.exists():
        return [str(script)]
    found = shutil.which("orz")
    return [found] if found else [sys.executable, "-m", "orzbob.cli"]


def _seconds(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU time stays honest on a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _heavy_modules(command: str) -> list[str]:
    probe = (
        "import sys\n"
        "from orzbob.cli.main import app\n"
        f"sys.argv = ['orz', {command!r}, '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    marker = next(x for x in out.splitlines() if x.startswith("HEAVY="))
    return [m for m in marker.removeprefix("HEAVY=").split(",") if m]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench cli")
    parser.add_argument("--cli-runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.cli_runs = 3
    print("== cli: start-up of the customer commands (budget 0.3 s)")
    for command in ("cloud", "login"):
        argv_ = [*_orz(), command, "--help"]
        runs = [_seconds(argv_) for _ in range(args.cli_runs)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        record(
            f"cli: orz {command} --help start-up (median of {len(runs)})",
            wall,
            "s",
            limit=BUDGET_SECONDS,
            note=f"{cpu:.3f} s CPU",
        )
        heavy = _heavy_modules(command)
        row(f"orz {command} --help loads", ", ".join(heavy) if heavy else "no SQLAlchemy/models")
    full = statistics.median(_seconds([*_orz(), "admin", "--help"])[1] for _ in range(3))
    row("orz admin --help (database commands, for comparison)", f"{full:.3f} s CPU")
