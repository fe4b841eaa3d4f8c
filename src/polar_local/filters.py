"""Meter filters and aggregations evaluated over stored events, as Polar evaluates them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .common import JSON, add_interval

_MISSING = object()
NUMERIC_FUNCS = ("sum", "max", "min", "avg")
MAX_BUCKETS = 5000


def event_property(ev: JSON, prop: str) -> Any:
    """`name`, `source` and `timestamp` are columns; anything else walks the metadata."""
    if prop == "name":
        return ev["name"]
    if prop == "source":
        return "user"
    if prop == "timestamp":
        return int(ev["ts"])
    value: Any = ev.get("metadata") or {}
    for part in prop.removeprefix("metadata.").split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if _is_number(a) and _is_number(b):
        return True
    return isinstance(a, str) and isinstance(b, str)


def clause_matches(ev: JSON, clause: JSON) -> bool:
    actual = event_property(ev, clause["property"])
    expected = clause["value"]
    op = clause["operator"]
    # Typed comparisons: a missing value or a type mismatch is simply false.
    if actual is _MISSING or not _same_kind(actual, expected):
        return False
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op in ("like", "not_like"):
        if not isinstance(actual, str):
            return False
        return (str(expected) in actual) == (op == "like")
    if isinstance(actual, bool):
        return False
    comparisons = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    return bool(comparisons[op](actual, expected))


def filter_matches(ev: JSON, flt: JSON) -> bool:
    clauses = flt.get("clauses") or []
    if not clauses:
        return True
    results = (
        filter_matches(ev, c) if "conjunction" in c else clause_matches(ev, c) for c in clauses
    )
    return all(results) if flt.get("conjunction", "and") == "and" else any(results)


def aggregate(aggregation: JSON, evs: Iterable[JSON]) -> float:
    func = aggregation.get("func", "count")
    if func == "count":
        return float(sum(1 for _ in evs))
    prop = aggregation["property"]
    if func == "unique":
        seen = {repr(v) for ev in evs if (v := event_property(ev, prop)) is not _MISSING}
        return float(len(seen))
    values = [float(v) for ev in evs if _is_number(v := event_property(ev, prop))]
    if not values:
        return 0.0
    if func == "sum":
        return float(sum(values))
    if func == "max":
        return max(values)
    if func == "min":
        return min(values)
    return sum(values) / len(values)


def combine(func: str, values: list[float]) -> float:
    """Aggregate per-customer quantities (`customer_aggregation_function`)."""
    if not values:
        return 0.0
    if func in ("count", "unique"):
        return float(len(values))
    if func == "sum":
        return sum(values)
    if func == "max":
        return max(values)
    if func == "min":
        return min(values)
    return sum(values) / len(values)


def bucket_starts(start: datetime, end: datetime, interval: str, tz: str) -> list[datetime]:
    zone = ZoneInfo(tz)
    local = start.astimezone(zone)
    if interval == "hour":
        first = local.replace(minute=0, second=0, microsecond=0)
    else:
        first = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if interval == "week":
            first -= timedelta(days=first.weekday())
        elif interval == "month":
            first = first.replace(day=1)
        elif interval == "year":
            first = first.replace(month=1, day=1)
    result = []
    current = first
    while current <= end:
        result.append(current)
        if len(result) > MAX_BUCKETS:
            raise ValueError("Too many intervals for this time range.")
        if interval == "hour":
            current = (current.astimezone(ZoneInfo("UTC")) + timedelta(hours=1)).astimezone(zone)
        else:
            current = add_interval(current, interval)
    return result


def quantities(
    aggregation: JSON,
    evs: list[JSON],
    *,
    start: datetime,
    end: datetime,
    interval: str,
    tz: str,
    customer_func: str | None,
) -> JSON:
    """Bucket matching events by their timestamp into `interval` steps of `tz`."""
    starts = bucket_starts(start, end, interval, tz)
    edges = [s.timestamp() for s in starts] + [float("inf")]
    buckets: list[list[JSON]] = [[] for _ in starts]
    for ev in evs:
        for i in range(len(starts)):
            if edges[i] <= ev["ts"] < edges[i + 1]:
                buckets[i].append(ev)
                break

    def measure(group: list[JSON]) -> float:
        if customer_func is None:
            return aggregate(aggregation, group)
        per_customer: dict[str, list[JSON]] = {}
        for ev in group:
            key = ev.get("customer_id") or f"ext:{ev.get('external_customer_id')}"
            per_customer.setdefault(key, []).append(ev)
        return combine(customer_func, [aggregate(aggregation, g) for g in per_customer.values()])

    return {
        "quantities": [
            {"timestamp": s.isoformat(), "quantity": measure(b)}
            for s, b in zip(starts, buckets, strict=True)
        ],
        "total": measure(evs),
    }
