"""Request dependencies: the runtime, one transaction per request, and the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from orzbob.accounts.models import Role
from orzbob.accounts.service import Principal, account_service
from orzbob.api.middleware import nul_refusal_of
from orzbob.kit.db import StatementConnection, session_scope, statement_connection
from orzbob.kit.errors import Forbidden, Unauthorized, Unprocessable
from orzbob.runtime import Runtime
from orzbob.testclock import control as testclock_control

_bearer = HTTPBearer(auto_error=False, description="An Orzbob API token (orz_…)")
BEARER_NEEDED = "Send your API token as 'Authorization: Bearer <token>'."
ORG_TOKENS_ONLY = "This endpoint is for organization tokens; staff use /v1/admin/…."


# Dependencies that do no I/O are `async` so FastAPI runs them inline instead of handing each
# to the threadpool (a measurable share of a small request).
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    # scope="function" below: the commit happens before the response is sent, so a client
    # never sees success for a write that then failed to commit.
    with session_scope(runtime.sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

T = TypeVar("T")


def _in_transaction(factory: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    with session_scope(factory) as session:
        return work(session)


async def in_transaction(
    runtime: Runtime, work: Callable[[Session], T], *, read_only: bool = False
) -> T:
    """Run `work` in one transaction, committed before it returns, on one threadpool hop.

    For the hot paths: `SessionDep` costs a thread hop to open the session, another for the
    endpoint and a third to commit; this is one. A read-only one takes no write lock on
    SQLite."""
    factory = runtime.read_sessions if read_only else runtime.sessions
    return await run_in_threadpool(_in_transaction, factory, work)


def _statement_or_transaction(
    runtime: Runtime,
    first: Callable[[StatementConnection], T | None],
    then: Callable[[Session], T],
    read_only: bool,
) -> T:
    if runtime.engine.dialect.name == "postgresql":
        with statement_connection(runtime.engine) as conn:
            done = first(conn)
        if done is not None:
            return done
    with session_scope(runtime.read_sessions if read_only else runtime.sessions) as session:
        return then(session)


async def in_statement_or_transaction(
    runtime: Runtime,
    first: Callable[[StatementConnection], T | None],
    then: Callable[[Session], T],
    *,
    read_only: bool = False,
) -> T:
    """On PostgreSQL `first`, work of one statement that commits as it runs
    (`kit.db.statement_connection`); when it gives None, having written nothing, or on
    SQLite, `then` in one transaction (a read-only one takes no write lock on SQLite). On
    one threadpool hop. For the hot paths whose common case is one statement: it costs no
    BEGIN or COMMIT round trip, and no session."""
    return await run_in_threadpool(_statement_or_transaction, runtime, first, then, read_only)


def json_response(model: BaseModel, *, status_code: int = 200) -> Response:
    """The model as JSON through pydantic's compiled serializer: the same bytes FastAPI
    would send for a `response_model` of the model's class, without validating it again."""
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
    )


async def get_now(runtime: RuntimeDep) -> datetime:
    return await now_of(runtime)


async def now_of(runtime: Runtime) -> datetime:
    """The request's time (`NowDep` without the dependency machinery, for the hot paths)."""
    if testclock_control.is_shared(runtime):
        # An API replica under a shared test clock: another process may have advanced it.
        await run_in_threadpool(testclock_control.follow, runtime)
    return runtime.clock.now()


NowDep = Annotated[datetime, Depends(get_now)]


def _authenticate(runtime: Runtime, raw: str) -> Principal:
    # Its own short read-only transaction: authentication must not hold the request's
    # transaction open (on SQLite a writing transaction holds the one write lock).
    with session_scope(runtime.read_sessions) as session:
        return account_service.authenticate(session, raw)


async def authenticate(
    runtime: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(BEARER_NEEDED)
    # A token seen in the last 30 s needs no query and no thread hop.
    cached = account_service.cached_principal(credentials.credentials)
    if cached is not None:
        return cached
    return await run_in_threadpool(_authenticate, runtime, credentials.credentials)


async def bearer_of(request: Request) -> HTTPAuthorizationCredentials | None:
    return await _bearer(request)


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await authenticate(runtime, credentials)
    # Refused only once the caller is known, so an anonymous caller learns nothing but 401.
    refusal = nul_refusal_of(request.scope)
    if refusal:
        raise Unprocessable(refusal)
    return principal


@dataclass(frozen=True)
class Caller:
    """The caller of a hot path, authenticated in the request's own transaction: a token the
    cache knows costs nothing, another one query in that transaction instead of a thread hop
    and a transaction of its own. The refusals and their order are `OrgPrincipalDep`'s."""

    raw: str
    cached: Principal | None
    refusal: str | None

    def principal(self, session: Session) -> Principal:
        return self.admitted(self.cached or account_service.authenticate(session, self.raw))

    def org_principal(self, session: Session) -> Principal:
        return self.org_admitted(self.principal(session))

    def admitted(self, principal: Principal) -> Principal:
        """The caller authenticated elsewhere (a read model's own statement), refused as
        `principal` would refuse it."""
        if self.refusal:
            raise Unprocessable(self.refusal)
        return principal

    def org_admitted(self, principal: Principal) -> Principal:
        principal = self.admitted(principal)
        if principal.org_id is None:
            raise Forbidden(ORG_TOKENS_ONLY)
        return principal


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(BEARER_NEEDED)
    raw = credentials.credentials
    return Caller(raw, account_service.cached_principal(raw), nul_refusal_of(request.scope))


CallerDep = Annotated[Caller, Depends(get_caller)]

# The hottest routes take only the request and call `caller_of`/`runtime_of`/`now_of`
# themselves: FastAPI's dependency solving cost more per request than their whole database
# read. `openapi_extra=BEARER` documents the token (and so its 401/403/422) as `CallerDep`
# would, and `needs_principal` knows such a route authenticates.
BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def caller_of(request: Request) -> Caller:
    """`CallerDep` for a route that takes only the request."""
    scheme, raw = get_authorization_scheme_param(request.headers.get("authorization"))
    if not raw or scheme.lower() != "bearer":
        raise Unauthorized(BEARER_NEEDED)
    return Caller(raw, account_service.cached_principal(raw), nul_refusal_of(request.scope))


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def needs_principal(route: object) -> bool:
    """Whether a route authenticates the caller: through its dependency tree (FastAPI
    `Dependant`), or by hand as a hot route documented with `openapi_extra=BEARER`."""
    if (getattr(route, "openapi_extra", None) or {}).get("security") == BEARER["security"]:
        return True
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if getattr(dependant, "call", None) in (get_principal, get_caller):
            return True
        stack.extend(getattr(dependant, "dependencies", ()))
    return False


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_org_principal(principal: PrincipalDep) -> Principal:
    if principal.org_id is None:
        raise Forbidden(ORG_TOKENS_ONLY)
    return principal


OrgPrincipalDep = Annotated[Principal, Depends(get_org_principal)]


async def get_org_admin(principal: OrgPrincipalDep) -> Principal:
    if principal.role != Role.ADMIN:
        raise Forbidden("Only an organization admin can do this; ask an admin of your org.")
    return principal


OrgAdminDep = Annotated[Principal, Depends(get_org_admin)]


def require_staff(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    allowed = roles or (Role.SUPPORT_L1, Role.SUPPORT_L2, Role.ENGINEERING)

    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(r.value for r in allowed)
            raise Forbidden(f"This needs a staff token with one of the roles: {names}.")
        return principal

    return dependency


StaffDep = Annotated[Principal, Depends(require_staff())]
EngineeringDep = Annotated[Principal, Depends(require_staff(Role.ENGINEERING))]
