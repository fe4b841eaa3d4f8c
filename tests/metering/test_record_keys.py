"""A usage record's one foreign key: its segment, with that segment's org and instance
(migration 0016), on both databases; and the migration both ways."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, insert, inspect, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.instances.service import instance_service
from orzbob.kit.db import make_engine, new_id
from orzbob.kit.migrate import alembic_config, upgrade
from orzbob.metering.models import UsageRecord, UsageSegment
from orzbob.metering.service import metering_service
from tests.conftest import T0
from tests.proof.processes import scratch_database


def _record(segment: UsageSegment, **override: Any) -> dict[str, Any]:
    return {
        "id": new_id(),
        "org_id": segment.org_id,
        "instance_id": segment.instance_id,
        "segment_id": segment.id,
        "tier": "small",
        "plan_id": "usage-only",
        "interval_start": T0,
        "interval_end": T0,
        "period_start": T0,
        "minutes": 1,
        "included_minutes": 0,
        "overage_minutes": 1,
        "billable_minutes": 1,
        "small_minutes": 0,
        "state": "pending",
        "attempts": 0,
        "created_at": T0,
        **override,
    }


def _segments(session: Session, catalog: Catalog) -> list[UsageSegment]:
    out = []
    for name in ("a", "b"):
        org = account_service.create_org(
            session, name=name, billing_emails=[], plan_id="usage-only", catalog=catalog, now=T0
        )
        inst = instance_service.create(
            session, org.id, tier="small", name=None, catalog=catalog, now=T0
        )
        segment = metering_service.open_segment_of(session, inst.id)
        assert segment is not None
        out.append(segment)
    return out


@pytest.mark.parametrize("wrong", ["org_id", "instance_id", "segment_id"])
def test_a_record_must_name_its_segments_org_and_instance(
    db_session: Session, catalog: Catalog, wrong: str
) -> None:
    a, b = _segments(db_session, catalog)
    db_session.execute(insert(UsageRecord), [_record(a)])  # its own: accepted
    other = {"org_id": b.org_id, "instance_id": b.instance_id, "segment_id": uuid.uuid4()}
    with pytest.raises(IntegrityError), db_session.begin_nested():
        db_session.execute(insert(UsageRecord), [_record(a, **{wrong: other[wrong]})])


@pytest.fixture
def scratch_engine(engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of the kind the tests run on."""
    if engine.dialect.name != "postgresql":
        fresh = make_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield fresh
        fresh.dispose()
        return
    url = engine.url.render_as_string(hide_password=False)
    name = f"{make_url(url).database}_migrations_{uuid.uuid4().hex[:6]}"
    with scratch_database(url, name) as own:
        fresh = make_engine(own)
        yield fresh
        fresh.dispose()


def _record_fks(engine: Engine) -> list[tuple[list[str], str]]:
    return sorted(
        (fk["constrained_columns"], fk["referred_table"])
        for fk in inspect(engine).get_foreign_keys("usage_records")
    )


def test_the_migration_goes_down_and_up_again(scratch_engine: Engine) -> None:
    upgrade(scratch_engine)
    one_key = [(["segment_id", "org_id", "instance_id"], "usage_segments")]
    assert _record_fks(scratch_engine) == one_key
    cfg = alembic_config()
    with scratch_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0015_segments_ff")
    assert _record_fks(scratch_engine) == [
        (["instance_id"], "instances"),
        (["org_id"], "orgs"),
        (["segment_id"], "usage_segments"),
    ]
    upgrade(scratch_engine)
    assert _record_fks(scratch_engine) == one_key
    if scratch_engine.dialect.name == "postgresql":
        # The step the deploy runs after the migration (existing records agree with theirs).
        with scratch_engine.begin() as conn:
            conn.execute(
                text(
                    "ALTER TABLE usage_records VALIDATE CONSTRAINT "
                    "fk_usage_records_segment_id_usage_segments"
                )
            )
