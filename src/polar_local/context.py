"""The per-app state every route reaches through `Ctx`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from .common import JSON, Clock
from .errors import NotFound, ValidationFailed, organization_token_issue
from .faults import FaultInjector
from .fixtures import render_subscription
from .store import Store
from .webhooks import WebhookSender


@dataclass
class ServerContext:
    store: Store
    webhooks: WebhookSender
    faults: FaultInjector
    clock: Clock
    accept_future_timestamps: bool = False

    def now(self) -> datetime:
        return self.clock()

    @property
    def org_id(self) -> str:
        return self.store.organization_id

    def require(self, kind: str, id_: Any) -> JSON:
        obj = self.store.get(kind, str(id_))
        if obj is None or obj.get("deleted_at") is not None:
            raise NotFound()
        return obj

    def customer_by_external(self, external_id: str) -> JSON | None:
        for c in self.store.all("customer"):
            if c["external_id"] == external_id and c["deleted_at"] is None:
                return c
        return None

    def live_customers(self) -> list[JSON]:
        return [c for c in self.store.all("customer") if c["deleted_at"] is None]

    def emit_subscription(self, types: list[str], core: JSON) -> list[str]:
        if not types:
            return []
        rendered = render_subscription(self.store, core)
        return [self.webhooks.emit(t, rendered, subscription_id=core["id"]) for t in types]


def refuse_organization_id(value: str | None, loc: tuple[str | int, ...] = ("body",)) -> None:
    """With an organization token, Polar refuses any `organization_id` in a body."""
    if value is not None:
        raise ValidationFailed([organization_token_issue((*loc, "organization_id"), value)])


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.polar
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]
