"""A batch's event ids (distinct, time-ordered UUIDv7s, however close the random bits run
to their end) and the quick path of the event metadata check."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import uuid6

from polar_local import common
from polar_local.common import new_ids
from polar_local.schemas import _check_any_event_metadata, _check_event_metadata


def check(ids: list[str], n: int) -> None:
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(ids)) == n and [str(u) for u in parsed] == ids
    assert parsed == sorted(parsed)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)


def test_a_batch_gets_distinct_ordered_uuid7s() -> None:
    first = new_ids(1000)
    check(first, 1000)
    check(first + new_ids(1000), 2000)  # and a later batch sorts after
    assert new_ids(0) == []


@pytest.mark.parametrize("low", [0, (1 << 62) - 1])
def test_the_random_bits_never_overflow(monkeypatch: pytest.MonkeyPatch, low: int) -> None:
    edge = uuid.UUID(int=(uuid6.uuid7().int & ~((1 << 62) - 1)) | low)
    monkeypatch.setattr(common.uuid6, "uuid7", lambda: edge)
    ids = new_ids(500)
    check(ids, 500)
    assert all(uuid.UUID(i).int >> 62 == edge.int >> 62 for i in ids)


METADATA = [
    {"record_id": "r", "minutes": 3, "rate": 0.5, "ok": True},
    {},
    {"": 1},
    {"k" * 41: 1},
    {"k": ""},
    {"k": "v" * 501},
    {"k": None},
    {"k": [1]},
    {f"k{i}": i for i in range(51)},
    {"_cost": {"amount": 12, "currency": "usd"}, "tier": "small"},
    {"_other": "v" * 501},
    {"k": "v" * 501, "": 1},
]


@pytest.mark.parametrize("metadata", METADATA)
def test_the_quick_metadata_check_agrees_with_the_full_one(metadata: dict[str, Any]) -> None:
    def outcome(check: Any) -> Any:
        try:
            return check(dict(metadata))
        except ValueError as e:
            return str(e)

    assert outcome(_check_event_metadata) == outcome(_check_any_event_metadata)
