"""Small helpers shared by the local Polar server: time, ids, pagination, sorting, metadata."""

from __future__ import annotations

import calendar
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import uuid6

Clock = Callable[[], datetime]
JSON = dict[str, Any]

RECURRING_INTERVALS = ("day", "week", "month", "year")
MAX_PAGE_SIZE = 100


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """Render a timestamp the way Polar does: ISO-8601 in UTC with a `Z` suffix."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def new_id() -> str:
    # Time-ordered keys keep SQLite inserts of high-volume rows fast.
    return str(uuid6.uuid7())


_RAND_B = (1 << 62) - 1  # a UUIDv7's low random bits (below the variant)


def new_ids(n: int) -> list[str]:
    """`n` time-ordered ids at the cost of one: a UUIDv7 and its successors in its random
    bits (an ingest batch's events)."""
    first = uuid6.uuid7().int
    base, low = first & ~_RAND_B, first & _RAND_B
    if low > _RAND_B - n:  # keep the successors inside the random bits
        low -= n
    out = []
    for k in range(n):
        h = f"{base | (low + k):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def add_interval(dt: datetime, interval: str, count: int = 1) -> datetime:
    """Move `dt` forward by `count` recurring intervals, clamping month ends like Stripe."""
    if interval == "day":
        return dt + timedelta(days=count)
    if interval == "week":
        return dt + timedelta(weeks=count)
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    total = dt.month - 1 + months
    year, month = dt.year + total // 12, total % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def page_response(items: list[JSON], page: int, limit: int) -> JSON:
    """Slice an already filtered and sorted list into Polar's page shape."""
    limit = clamp_limit(limit)
    total = len(items)
    start = (page - 1) * limit
    return {
        "items": items[start : start + limit],
        "pagination": {"total_count": total, "max_page": math.ceil(total / limit)},
    }


def clamp_limit(limit: int) -> int:
    # Polar silently caps the page size instead of refusing it.
    return max(1, min(MAX_PAGE_SIZE, limit))


def sort_items(items: list[JSON], sorting: Iterable[str] | None) -> list[JSON]:
    """Sort by wire fields; `-field` is descending; unknown fields are ignored."""
    result = list(items)
    for criterion in reversed(list(sorting or [])):
        desc = criterion.startswith("-")
        field = criterion.lstrip("-")
        if not any(field in item for item in result):
            continue
        present = [i for i in result if i.get(field) is not None]
        missing = [i for i in result if i.get(field) is None]
        present.sort(key=lambda i: _sort_key(i[field]), reverse=desc)
        result = present + missing
    return result


def _sort_key(value: Any) -> Any:
    if isinstance(value, str):
        # Timestamps drop zero microseconds, so compare them as instants, not as text.
        if len(value) >= 19 and value[10:11] == "T":
            try:
                return (0, datetime.fromisoformat(value).timestamp())
            except ValueError:
                pass
        return (1, value.lower())
    if isinstance(value, bool | int | float):
        return (0, float(value))
    return (2, str(value))


def metadata_query(params: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Collect deepObject filters such as `metadata[plan]=pro` from query parameters."""
    result: dict[str, list[str]] = {}
    for key, value in params:
        if key.startswith("metadata[") and key.endswith("]"):
            result.setdefault(key[len("metadata[") : -1], []).append(value)
    return result


def metadata_matches(metadata: Mapping[str, Any], query: Mapping[str, list[str]]) -> bool:
    for key, wanted in query.items():
        if key not in metadata:
            return False
        value = metadata[key]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text not in wanted:
            return False
    return True


def as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)
