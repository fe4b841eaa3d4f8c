from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from orzbob.accounts.models import Role
from orzbob.accounts.service import Principal, hash_token
from orzbob.api.deps import (
    Caller,
    CallerDep,
    NowDep,
    OrgPrincipalDep,
    PrincipalDep,
    RuntimeDep,
    SessionDep,
    bearer_of,
    caller_of,
    get_principal,
    in_statement_or_transaction,
    json_response,
    now_of,
    runtime_of,
)
from orzbob.api.routes import fast_first
from orzbob.instances.bulk import BeatIn, bulk_beats
from orzbob.instances.models import Instance, State
from orzbob.instances.schemas import (
    BulkHeartbeats,
    BulkHeartbeatsOut,
    Heartbeat,
    HeartbeatOut,
    InstanceCreate,
    InstanceOut,
    PausedOut,
)
from orzbob.instances.service import instance_service
from orzbob.kit.db import StatementConnection
from orzbob.kit.errors import Forbidden
from orzbob.runtime import Runtime

router = APIRouter(prefix="/v1/instances", tags=["instances"])


def _org(principal: OrgPrincipalDep) -> uuid.UUID:
    assert principal.org_id is not None
    return principal.org_id


@router.post("", response_model=InstanceOut, status_code=201)
def create_instance(
    body: InstanceCreate,
    principal: OrgPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> InstanceOut:
    instance = instance_service.create(
        session,
        _org(principal),
        tier=body.tier,
        name=body.name,
        catalog=runtime.catalog,
        now=now,
    )
    return InstanceOut.model_validate(instance)


@router.get("", response_model=list[InstanceOut])
def list_instances(
    principal: OrgPrincipalDep,
    session: SessionDep,
    state: State | None = Query(None, description="Only instances in this state."),
) -> list[InstanceOut]:
    return [
        InstanceOut.model_validate(i)
        for i in instance_service.list(session, _org(principal), state=state)
    ]


@router.get("/{instance_id}", response_model=InstanceOut)
def get_instance(
    instance_id: uuid.UUID, principal: OrgPrincipalDep, session: SessionDep
) -> InstanceOut:
    return InstanceOut.model_validate(instance_service.get(session, _org(principal), instance_id))


def _command(
    action: Callable[..., Instance],
    instance_id: uuid.UUID,
    principal: Principal,
    runtime: Runtime,
    session: Session,
    now: datetime,
) -> InstanceOut:
    instance = action(session, _org(principal), instance_id, catalog=runtime.catalog, now=now)
    return InstanceOut.model_validate(instance)


@router.post("/{instance_id}/pause", response_model=InstanceOut)
def pause_instance(
    instance_id: uuid.UUID,
    principal: OrgPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> InstanceOut:
    return _command(instance_service.pause, instance_id, principal, runtime, session, now)


@router.post("/{instance_id}/resume", response_model=InstanceOut)
def resume_instance(
    instance_id: uuid.UUID,
    principal: OrgPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> InstanceOut:
    return _command(instance_service.resume, instance_id, principal, runtime, session, now)


@router.delete("/{instance_id}", response_model=InstanceOut)
def stop_instance(
    instance_id: uuid.UUID,
    principal: OrgPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
) -> InstanceOut:
    return _command(instance_service.stop, instance_id, principal, runtime, session, now)


async def _beat(
    caller: Caller, instance_id: uuid.UUID, body: Heartbeat, runtime: Runtime, now: datetime
) -> Response:
    """The beat: the common one in one statement, committed as it runs, that authenticates
    as it writes; anything else (a refusal to give, a cap that may be reached) takes the full
    way, in a transaction."""
    timeout = timedelta(seconds=runtime.settings.heartbeat_timeout_seconds)

    def quick(conn: StatementConnection) -> HeartbeatOut | None:
        if caller.refusal is not None:
            return None
        row = instance_service.quick_heartbeat(
            conn,
            hash_token(caller.raw),
            instance_id,
            active=body.active,
            source=body.source,
            catalog=runtime.catalog,
            now=now,
            timeout=timeout,
        )
        return None if row is None else HeartbeatOut.model_validate(row)

    def beat(session: Session) -> HeartbeatOut:
        done = instance_service.heartbeat(
            session,
            _org(caller.org_principal(session)),
            instance_id,
            active=body.active,
            source=body.source,
            catalog=runtime.catalog,
            now=now,
            timeout=timeout,
        )
        out = HeartbeatOut.model_validate(done.instance)
        if done.paused_by is not None and done.cap_reached_at is not None:
            out.notice = (
                f"Paused ({done.paused_by}): the cap was reached at "
                f"{done.cap_reached_at:%Y-%m-%d %H:%M:%S} UTC. Usage stopped at that moment."
            )
        return out

    return json_response(await in_statement_or_transaction(runtime, quick, beat))


_INSTANCE_ID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)


async def _plain_json(request: Request) -> bytes | None:
    """The body of a fast way's request: JSON, said so exactly, in ASCII; else None (what
    `json.loads` reads otherwise, other encodings or a BOM, is the declared endpoint's)."""
    if request.headers.get("content-type") != "application/json":
        return None
    raw = await request.body()
    return raw if raw.isascii() else None


async def _common_heartbeat(request: Request) -> Response | None:
    """The heartbeat route's fast way (`api.routes.fast_first`): a well-formed beat (a JSON
    body `Heartbeat` accepts, a valid id, a bearer token) is parsed in one pass by pydantic's
    compiled validator, without FastAPI's body parsing and dependency solving, and beaten as
    the declared endpoint beats it. Anything else, None: the declared endpoint answers it, so
    every refusal of malformed input stays FastAPI's (tests/api/test_heartbeat_input.py)."""
    raw = await _plain_json(request)
    if raw is None:
        return None
    try:
        body = Heartbeat.model_validate_json(raw)
        instance_id = _INSTANCE_ID.validate_python(request.path_params["instance_id"])
    except ValidationError:
        return None
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if not token or scheme.lower() != "bearer":
        return None
    caller, runtime = caller_of(request), runtime_of(request)
    return await _beat(caller, instance_id, body, runtime, await now_of(runtime))


async def heartbeat(
    instance_id: uuid.UUID,
    body: Heartbeat,
    caller: CallerDep,
    runtime: RuntimeDep,
    now: NowDep,
) -> Response:
    """A sign of life from the instance agent. When the instance has reached a cap it is
    paused at once: the response's `state`, `reason` and `notice` say so."""
    return await _beat(caller, instance_id, body, runtime, now)


# The single heartbeat has a router of its own, matched before the other instance routes
# (api.app): each route tried before the right one cost a beat about 20,000 instructions.
heartbeat_router = APIRouter(prefix="/v1/instances", tags=["instances"])
heartbeat_router.add_api_route(
    "/{instance_id}/heartbeat",
    heartbeat,
    methods=["POST"],
    response_model=HeartbeatOut,
    route_class_override=fast_first(_common_heartbeat),
)


beats_router = APIRouter(prefix="/v1", tags=["instances"])


async def _bulk(
    body: BulkHeartbeats, principal: Principal, runtime: Runtime, now: datetime
) -> Response:
    if principal.org_id is None and principal.role != Role.FLEET:
        raise Forbidden("Bulk heartbeats need an organization token or a fleet token.")
    result = await run_in_threadpool(
        bulk_beats.apply,
        runtime.session,
        [BeatIn(b.instance_id, b.active, b.source) for b in body.beats],
        org_id=principal.org_id,
        catalog=runtime.catalog,
        now=now,
        timeout=timedelta(seconds=runtime.settings.heartbeat_timeout_seconds),
    )
    # Built from values already of the right types: nothing to validate again.
    out = BulkHeartbeatsOut.model_construct(
        accepted=result.accepted,
        unknown=len(result.unknown_ids),
        stopped=len(result.stopped_ids),
        duplicates=result.duplicates,
        unknown_ids=result.unknown_ids,
        stopped_ids=result.stopped_ids,
        paused=[
            PausedOut.model_construct(instance_id=i, reason=r) for i, r in result.paused.items()
        ],
    )
    return json_response(out)


async def _common_bulk(request: Request) -> Response | None:
    """The bulk route's fast way (`api.routes.fast_first`): a well-formed batch is parsed from
    the raw body in one pass by pydantic's compiled validator (a third of the time of
    `json.loads` and validating the result) and beaten as the declared endpoint beats it.
    Anything else, None: the declared endpoint answers it, so every refusal of malformed
    input stays FastAPI's (tests/api/test_bulk_heartbeat_input.py)."""
    raw = await _plain_json(request)
    if raw is None:
        return None
    try:
        body = BulkHeartbeats.model_validate_json(raw)
    except ValidationError:
        return None
    runtime = runtime_of(request)
    principal = await get_principal(request, runtime, await bearer_of(request))
    return await _bulk(body, principal, runtime, await now_of(runtime))


async def bulk_heartbeats(
    body: BulkHeartbeats, principal: PrincipalDep, runtime: RuntimeDep, now: NowDep
) -> Response:
    """Up to 1,000 heartbeats at once, from a control plane that gathers its agents' beats.
    An org token beats for its own instances (another org's ids count as unknown); a staff
    token with role `fleet` for any org's. Beats for stopped instances are listed so their
    agents can shut down; instances the beats found at a cap are paused and listed."""
    return await _bulk(body, principal, runtime, now)


beats_router.add_api_route(
    "/heartbeats",
    bulk_heartbeats,
    methods=["POST"],
    response_model=BulkHeartbeatsOut,
    route_class_override=fast_first(_common_bulk),
)
