"""/metrics: the money-path gauges come from the database at scrape time (so API replicas
report what workers do), and requests are counted by route template, never by raw path."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import update

from orzbob.metering.models import RecordState, UsageRecord
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle, advance
from tests.metering.polar_support import make_records


def sample(body: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_queue_dead_and_oldest_unsent_are_read_from_the_database(
    runtime: Runtime, client: TestClient
) -> None:
    make_records(runtime, 5)
    with runtime.session() as s:
        ids = s.scalars(UsageRecord.__table__.select().with_only_columns(UsageRecord.id)).all()
        s.execute(
            update(UsageRecord).where(UsageRecord.id == ids[0]).values(state=RecordState.DEAD.value)
        )
    advance(runtime, 700)
    body = client.get("/metrics").text
    assert sample(body, "orzbob_usage_meter_queue") == 4
    assert sample(body, "orzbob_usage_meter_dead_records") == 1
    assert sample(body, "orzbob_usage_meter_oldest_unsent_seconds") >= 700


def test_requests_are_counted_by_route_template_and_status_class(
    client: TestClient, make_org: Callable[..., OrgHandle]
) -> None:
    org = make_org()
    missing = uuid.uuid4()
    for _ in range(2):
        assert client.get(f"/v1/instances/{missing}", headers=org.headers).status_code == 404
    body = client.get("/metrics").text
    labels = '{method="GET",route="/v1/instances/{id}",status="4xx"}'
    assert sample(body, "orzbob_http_requests_total", labels) >= 2
    assert str(missing) not in body
