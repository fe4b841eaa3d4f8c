"""What a plan change does to quota periods (registered on `accounts` by `install_hooks`).

* Every period up to the change keeps the plan it ran on: periods without usage get a row
  recording that plan and its base, so credits carried across periods are settled against
  figures that never change afterwards.
* The current period takes the new plan, and its exhaustion is recomputed under it: an
  upgrade that leaves allowance clears the run-out moment; a downgrade below what is already
  used runs out at the change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from orzbob.accounts.models import Org
from orzbob.catalog.models import Catalog
from orzbob.kit.money import to_cents
from orzbob.quota.allocation import lock_periods, org_period
from orzbob.quota.repository import quota_repository

# Sign-up to now is a few hundred monthly periods at most; the bound only stops a corrupt
# period definition from looping.
MAX_PERIODS = 600


def keep_past_plans(session: Session, org: Org, at: datetime, catalog: Catalog) -> None:
    """Before the org leaves its plan: give every period from sign-up to the one containing
    `at` a row, recording the plan it ran on where none is recorded yet. Rows are only
    inserted (existing ones are neither changed nor locked)."""
    plan = catalog.plan(org.plan_id)
    base = to_cents(plan.monthly_base)
    rows = []
    period = org_period(org, org.signup_at)
    for _ in range(MAX_PERIODS):
        rows.append(
            {
                "org_id": org.id,
                "period_start": period.start,
                "period_end": period.end,
                "used_small_minutes": 0,
                "exhausted_at": None,
                "plan_id": plan.id,
                "monthly_base_cents": base,
            }
        )
        if period.end > at:
            break
        period = org_period(org, period.end)
    quota_repository.insert_periods(session, rows)


def apply_new_plan(
    session: Session, org: Org, previous: str, at: datetime, catalog: Catalog
) -> None:
    """After the org moved to its new plan at `at`: the current period takes it, and its
    exhaustion is recomputed under the new allowance."""
    plan = catalog.plan(org.plan_id)
    period = org_period(org, at)
    qp = lock_periods(session, {(org.id, period)})[(org.id, period.start)]
    qp.plan_id = plan.id
    qp.monthly_base_cents = to_cents(plan.monthly_base)
    included = plan.included_small_minutes
    if included == 0 or qp.used_small_minutes < included:
        qp.exhausted_at = None
    elif qp.exhausted_at is None:
        qp.exhausted_at = at
    session.flush()
