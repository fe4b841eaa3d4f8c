"""`make bench`: prints throughput and latency figures. Not a test."""

from __future__ import annotations

import sys


def main() -> None:
    print("no benchmarks registered yet", file=sys.stderr)


if __name__ == "__main__":
    main()
