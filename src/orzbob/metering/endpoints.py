from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from orzbob.accounts.service import account_service
from orzbob.api.deps import NowDep, OrgPrincipalDep, SessionDep
from orzbob.kit.errors import Unprocessable
from orzbob.metering.schemas import UsageExport, UsageRecordOut
from orzbob.metering.service import metering_service
from orzbob.quota.allocation import org_period

router = APIRouter(prefix="/v1/billing", tags=["billing"])

MAX_EXPORT = 100_000
CSV_FIELDS = list(UsageRecordOut.model_fields)


@router.get(
    "/usage",
    response_model=UsageExport,
    response_model_by_alias=False,
    responses={
        200: {
            "description": "The records as JSON, or as CSV with `format=csv`.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def export_usage(
    principal: OrgPrincipalDep,
    session: SessionDep,
    now: NowDep,
    from_: datetime | None = Query(None, alias="from", description="Start (RFC 3339)."),
    to: datetime | None = Query(None, description="End (RFC 3339), exclusive."),
    format: Literal["json", "csv"] = Query("json"),
) -> UsageExport | Response:
    """Usage records whose interval ends in [from, to); the current period by default."""
    assert principal.org_id is not None
    org = account_service.get_org(session, principal.org_id)
    for name, value in (("from", from_), ("to", to)):
        if value is None:
            continue
        if value.tzinfo is None:
            raise Unprocessable(f"'{name}' needs a timezone, e.g. 2026-03-01T00:00:00Z.")
        try:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
            value.astimezone(UTC)
        except OverflowError:
            raise Unprocessable(
                f"'{name}' is out of the supported range (years 1 to 9999 in UTC)."
            ) from None
    period = org_period(org, now)
    start, end = from_ or period.start, to or period.end
    if end <= start:
        raise Unprocessable("'to' must be after 'from'.")
    records = [
        UsageRecordOut.model_validate(r)
        for r in metering_service.export_records(
            session, org.id, after=start, upto=end, max_records=MAX_EXPORT
        )
    ]
    if format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in records:
            writer.writerow(r.model_dump(mode="json"))
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    return UsageExport(
        organization=org.name,
        from_=start,
        to=end,
        total_minutes=sum(r.minutes for r in records),
        total_billable_minutes=sum(r.billable_minutes for r in records),
        records=records,
    )
