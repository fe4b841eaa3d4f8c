"""Staff route: the latest kept reconciliation report."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query

from orzbob.api.deps import SessionDep, StaffDep
from orzbob.api.openapi import errors
from orzbob.kit.errors import NotFound
from orzbob.polar.reconcile_service import reconcile_service, run_view

router = APIRouter(prefix="/v1/admin/reconcile", tags=["support"])


@router.get("/latest", responses=errors(404))
def latest_reconcile(
    principal: StaffDep,
    session: SessionDep,
    org: uuid.UUID | None = Query(None, description="Only runs of this org."),
) -> dict[str, Any]:
    """The latest finished reconciliation run: totals per class in minutes and dollars,
    explanations, and every difference (up to 1,000)."""
    run = reconcile_service.latest(session, org_id=org)
    if run is None:
        raise NotFound("No reconciliation has run yet: `orz polar reconcile` or the daily job.")
    return run_view(run)
