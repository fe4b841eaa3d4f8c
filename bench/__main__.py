"""`make bench`: prints throughput and latency figures. Not a test.

Pass section names to run only some (e.g. `make bench BENCH_ARGS=metering`); other flags go to
each section (`--soak-seconds 60`).
"""

from __future__ import annotations

import sys

SECTIONS = ["metering", "billing", "polar", "throttle", "cli"]


def main() -> None:
    args = sys.argv[1:]
    chosen = [a for a in args if a in SECTIONS] or SECTIONS
    flags = [a for a in args if a not in SECTIONS]
    for name in chosen:
        module = __import__(f"bench.{name}", fromlist=["main"])
        module.main(flags)


if __name__ == "__main__":
    main()
