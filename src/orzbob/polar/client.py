"""The one place that talks to Polar: `polar-sdk` 1.x with timeouts and typed outcomes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from polar.base import (
    PolarClientError,
    PolarDeserializationError,
    PolarError,
    PolarNetworkError,
    PolarRateLimitError,
    PolarServerError,
)
from polar.v2026_10 import Polar
from polar.v2026_10.errors import HTTPValidationError

from orzbob.config import Settings

log = logging.getLogger(__name__)


class PolarUnavailable(Exception):
    """A failure worth retrying later: network, timeout, 429 or 5xx."""

    def __init__(self, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class PolarRejected(Exception):
    """Polar refused the request itself (4xx). `by_index` maps bad batch items to Polar's
    message when it said which ones; `blocking` means no batch can pass (auth, scope)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        by_index: dict[int, str] | None = None,
        blocking: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.by_index = by_index or {}
        self.blocking = blocking


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
                422, f"{what}: {_validation_message(exc)}", by_index=_by_index(exc)
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

    def close(self) -> None:
        if self._client is not None:
            close = getattr(self._client, "close", None)
            if callable(close):
                close()
            self._client = None


def _validation_message(exc: HTTPValidationError) -> str:
    details = exc.error.detail or []
    return "; ".join(f"{'.'.join(str(p) for p in d.loc)}: {d.msg}" for d in details) or str(exc)


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
