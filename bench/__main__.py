"""`make bench`: prints throughput and latency figures. Not a test.

Pass section names to run only some (e.g. `make bench BENCH_ARGS=metering`); other flags go to
each section (`--soak-seconds 60`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import RESULTS, autovacuum_state, print_table, settle_postgres

# The CLI's start-up first: after the others, the database is still busy in the background
# (autovacuum and checkpoints after gigabytes of loads), and a 0.2 s figure shows it.
SECTIONS = ["cli", "http", "metering", "billing", "polar", "throttle"]


def main() -> None:
    args = sys.argv[1:]
    chosen = [a for a in args if a in SECTIONS] or SECTIONS
    flags = [a for a in args if a not in SECTIONS]
    took: dict[str, float] = {}
    for name in chosen:
        module = __import__(f"bench.{name}", fromlist=["main"])
        start = time.perf_counter()
        settle_postgres()
        module.main(flags)
        took[name] = round(time.perf_counter() - start, 1)
    print_table()
    print("\n  sections: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
    print(f"  whole run: {sum(took.values()) / 60:.1f} min")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / _file_name(chosen, flags)
    path.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "postgresql_autovacuum": autovacuum_state(),
                },
                "args": args,
                "seconds": took,
                "figures": RESULTS,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {path}")


def _file_name(chosen: list[str], flags: list[str]) -> str:
    """`latest.json` holds the last full run only: a quick run or some sections are written
    beside it, not over it."""
    if chosen != SECTIONS:
        return "partial.json"
    if flags:
        return "quick.json" if flags == ["--quick"] else "partial.json"
    return "latest.json"


if __name__ == "__main__":
    main()
