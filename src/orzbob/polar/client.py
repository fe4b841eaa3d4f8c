"""The one place that talks to Polar: `polar-sdk` 1.x with timeouts and typed outcomes."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from polar.base import (
    PolarClientError,
    PolarDeserializationError,
    PolarError,
    PolarNetworkError,
    PolarRateLimitError,
    PolarServerError,
    parse_response_json,
)
from polar.v2026_10 import Polar
from polar.v2026_10.errors import HTTPValidationError
from polar.v2026_10.outputs import Checkout, Customer, EventsIngestResponse, Meter, Product

from orzbob.config import Settings

if TYPE_CHECKING:
    from orzbob.runtime import Runtime

log = logging.getLogger(__name__)


class PolarUnavailable(Exception):
    """A failure worth retrying later: network, timeout, 429 or 5xx."""

    def __init__(self, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class PolarRejected(Exception):
    """Polar refused the request itself (4xx). `by_index` maps bad batch items to Polar's
    message when it said which ones; `blocking` means no batch can pass (auth, scope);
    `fields` maps a 422's dotted locations (`body.email`) to Polar's messages."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        by_index: dict[int, str] | None = None,
        blocking: bool = False,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.by_index = by_index or {}
        self.blocking = blocking
        self.fields = fields or {}


@dataclass
class IngestResult:
    inserted: int
    duplicates: int


@dataclass
class PolarGateway:
    """Thin wrapper over the SDK: converts SDK errors into the two outcomes above."""

    settings: Settings
    _client: Polar | None = field(default=None, init=False)

    @property
    def client(self) -> Polar:
        if self._client is None:
            key = self.settings.polar_api_key
            self._client = Polar(
                key.get_secret_value() if key else "",
                base_url=self.settings.polar_api_url,
                timeout=self.settings.polar_timeout_seconds,
            )
        return self._client

    @contextmanager
    def translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except PolarRateLimitError as exc:
            raise PolarUnavailable(
                "rate_limited", f"{what}: rate limited by Polar", retry_after=exc.retry_after
            ) from exc
        except HTTPValidationError as exc:
            raise PolarRejected(
                422,
                f"{what}: {_validation_message(exc)}",
                by_index=_by_index(exc),
                fields=_fields(exc),
            ) from exc
        except PolarClientError as exc:
            blocking = exc.status_code in (401, 403)
            raise PolarRejected(
                exc.status_code,
                f"{what}: Polar answered {exc.status_code}: {exc.error}",
                blocking=blocking,
            ) from exc
        except PolarServerError as exc:
            raise PolarUnavailable("server_error", f"{what}: {exc.message}") from exc
        except PolarNetworkError as exc:
            raise PolarUnavailable("network", f"{what}: {exc.message}") from exc
        except PolarDeserializationError as exc:
            # The request may have been applied; resending is safe where we rely on it
            # (events carry external_id), so treat as retryable.
            raise PolarUnavailable("bad_response", f"{what}: {exc.message}") from exc
        except PolarError as exc:  # pragma: no cover - future SDK error classes
            raise PolarUnavailable("error", f"{what}: {exc.message}") from exc

    def ingest(self, events: list[dict[str, Any]]) -> IngestResult:
        with self.translate("event ingest"):
            result = self.client.events.ingest(events=events)  # type: ignore[arg-type]
        return IngestResult(inserted=result.inserted, duplicates=result.duplicates or 0)

    def ingest_json(self, events: Sequence[str]) -> IngestResult:
        """`ingest` for events already encoded (each a JSON object as text): the body is
        joined, not built and encoded again. Same request, same outcomes."""
        body = ('{"events":[' + ",".join(events) + "]}").encode()
        sdk = self.client.events.client
        with self.translate("event ingest"):
            # The SDK takes only objects to encode; its own HTTP client sends the bytes, with
            # its headers and timeout, and its parser raises its errors for `translate`.
            request = sdk._client.build_request(
                "POST",
                "/v1/events/ingest",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            result = parse_response_json(
                sdk.send_request(request), EventsIngestResponse, {422: HTTPValidationError}
            )
        return IngestResult(inserted=result.inserted, duplicates=result.duplicates or 0)

    def list_events_page(
        self,
        *,
        name: str,
        external_customer_id: str,
        start: datetime,
        end: datetime,
        page: int,
        limit: int = 100,
    ) -> tuple[list[Any], bool, int | None]:
        """One page of user events, oldest first: (items, has_more, total when known)."""
        with self.translate("list events"):
            result = self.client.events.list(
                name=name,
                external_customer_id=external_customer_id,
                start_timestamp=start.isoformat(),
                end_timestamp=end.isoformat(),
                source="user",
                page=page,
                limit=limit,
                sorting=["timestamp"],
            )
        pagination = result.pagination
        max_page = getattr(pagination, "max_page", None)
        if max_page is not None:
            return list(result.items), page < max_page, getattr(pagination, "total_count", None)
        return list(result.items), bool(getattr(pagination, "has_next_page", False)), None

    # -- catalog (`orz polar sync`); lists are read whole, 100 per page -----------------
    def list_meters(self) -> list[Meter]:
        with self.translate("list meters"):
            return list(self.client.meters.iter_list(limit=100, sorting=["created_at"]))

    def create_meter(self, **body: Any) -> Meter:
        with self.translate("create meter"):
            return self.client.meters.create(**body)

    def update_meter(self, meter_id: str, **body: Any) -> Meter:
        with self.translate(f"update meter {meter_id}"):
            return self.client.meters.update(meter_id, **body)

    def list_products(self, *, metadata: dict[str, str] | None = None) -> list[Product]:
        with self.translate("list products"):
            items = self.client.products.iter_list(
                limit=100,
                sorting=["created_at"],
                metadata=metadata,  # type: ignore[arg-type]
            )
            return list(items)

    def create_product(self, **body: Any) -> Product:
        with self.translate("create product"):
            return self.client.products.create(**body)

    def update_product(self, product_id: str, **body: Any) -> Product:
        with self.translate(f"update product {product_id}"):
            return self.client.products.update(product_id, **body)

    # -- customers and checkout --------------------------------------------------------
    def create_customer(self, *, email: str, name: str, external_id: str) -> Customer:
        with self.translate("create customer"):
            return self.client.customers.create(email=email, name=name, external_id=external_id)

    def get_customer_external(self, external_id: str) -> Customer | None:
        try:
            with self.translate("get customer by external id"):
                return self.client.customers.get_external(external_id)
        except PolarRejected as exc:
            if exc.status == 404:
                return None
            raise

    def create_checkout(self, **body: Any) -> Checkout:
        with self.translate("create checkout"):
            return self.client.checkouts.create(**body)

    def create_discount(self, **body: Any) -> Any:
        with self.translate("discount create"):
            return self.client.discounts.create(**body)

    def get_discount(self, discount_id: str) -> Any:
        with self.translate("discount read"):
            return self.client.discounts.get(discount_id)

    def get_subscription(self, subscription_id: str) -> Any:
        with self.translate("subscription read"):
            return self.client.subscriptions.get(subscription_id)

    def set_subscription_discount(self, subscription_id: str, discount_id: str) -> Any:
        with self.translate("subscription discount"):
            return self.client.subscriptions.update(subscription_id, discount_id=discount_id)

    def close(self) -> None:
        if self._client is not None:
            close = getattr(self._client, "close", None)
            if callable(close):
                close()
            self._client = None


def gateway_for(runtime: Runtime) -> PolarGateway:
    """The runtime's shared gateway for request-time calls (one SDK client per process)."""
    if runtime.polar_gateway is None:
        runtime.polar_gateway = PolarGateway(runtime.settings)
    return runtime.polar_gateway


def _validation_message(exc: HTTPValidationError) -> str:
    details = exc.error.detail or []
    return "; ".join(f"{'.'.join(str(p) for p in d.loc)}: {d.msg}" for d in details) or str(exc)


def _fields(exc: HTTPValidationError) -> dict[str, str]:
    return {".".join(str(p) for p in d.loc): d.msg for d in exc.error.detail or []}


def _by_index(exc: HTTPValidationError) -> dict[int, str]:
    """Per-event messages from a 422 whose locations look like ["body","events",i,...]."""
    out: dict[int, str] = {}
    for d in exc.error.detail or []:
        loc = list(d.loc)
        if len(loc) >= 3 and loc[0] == "body" and loc[1] == "events" and isinstance(loc[2], int):
            field_path = ".".join(str(p) for p in loc[3:]) or "event"
            msg = f"{field_path}: {d.msg}"
            out[loc[2]] = f"{out[loc[2]]}; {msg}" if loc[2] in out else msg
    return out
