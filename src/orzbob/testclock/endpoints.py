from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from orzbob.api.deps import PrincipalDep, RuntimeDep, StaffDep
from orzbob.testclock import control
from orzbob.testclock.control import MAX_ADVANCE_SECONDS

router = APIRouter(prefix="/v1/test-clock", tags=["test clock"])


class ClockOut(BaseModel):
    now: datetime
    test_clock: bool = True


class AdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: "60" and true are not a number of seconds.
    seconds: StrictInt = Field(gt=0, le=MAX_ADVANCE_SECONDS)


class AdvanceOut(BaseModel):
    now: datetime
    jobs_run: int


@router.get("", response_model=ClockOut)
def get_clock(_: PrincipalDep, runtime: RuntimeDep) -> ClockOut:
    return ClockOut(now=control.require_test_clock(runtime).now())


@router.post("/advance", response_model=AdvanceOut)
async def advance_clock(body: AdvanceIn, _: StaffDep, runtime: RuntimeDep) -> AdvanceOut:
    now, runs = await run_in_threadpool(control.advance, runtime, body.seconds)
    return AdvanceOut(now=now, jobs_run=runs)
