"""The event text the flusher sends is `polar_event` of the record, whatever the database
renders its ids and timestamps from (the claim returns them as text)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, update

from orzbob.metering.flusher import polar_event
from orzbob.metering.models import UsageRecord
from orzbob.runtime import Runtime
from tests.metering.polar_support import billing_settings, flusher_for, make_records


def test_each_claimed_event_is_the_records_polar_event(runtime: Runtime) -> None:
    make_records(runtime, 6)
    with runtime.session() as s:
        rows = s.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
        # Timestamps with microseconds (isoformat then writes them) and without.
        odd = rows[1].interval_end + timedelta(microseconds=1500)
        later = rows[2].period_start + timedelta(seconds=7, microseconds=10)
        s.execute(update(UsageRecord).where(UsageRecord.id == rows[1].id).values(interval_end=odd))
        s.execute(
            update(UsageRecord).where(UsageRecord.id == rows[2].id).values(period_start=later)
        )
    settings = billing_settings(runtime.settings, "http://127.0.0.1:9")
    batch = flusher_for(runtime, settings)._claim()
    with runtime.session() as s:
        records = {str(r.id): r for r in s.scalars(select(UsageRecord))}
        expected = [(i, polar_event(records[i])) for i in sorted(records)]
    assert [(i, json.loads(text)) for i, text in batch] == expected
    assert [e["timestamp"] for _, e in expected].count(expected[1][1]["timestamp"]) == 1
    assert "." in expected[1][1]["timestamp"] and "." in expected[2][1]["metadata"]["period_start"]
