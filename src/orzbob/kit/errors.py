"""One error base class carrying its HTTP status; the API renders every one the same way."""

from __future__ import annotations


class OrzbobError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        # More fields of the error body beside `error` and `detail` (JSON-ready values).
        self.extra = extra or {}


class BadRequest(OrzbobError):
    pass


class Unauthorized(OrzbobError):
    status_code = 401
    error = "unauthorized"

    def __init__(self, detail: str = "A valid API token is required.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="orzbob"'})


class Forbidden(OrzbobError):
    status_code = 403
    error = "forbidden"


class NotFound(OrzbobError):
    status_code = 404
    error = "not_found"


class Conflict(OrzbobError):
    status_code = 409
    error = "conflict"


class CapHolds(Conflict):
    """A cap forbids running now: `error` names the cap, `retry_at` says when it lifts by
    itself (null where only an action lifts it: an upgrade, a higher spend limit)."""

    def __init__(self, cap: str, detail: str, *, retry_at: str | None) -> None:
        super().__init__(detail, extra={"retry_at": retry_at})
        self.error = cap


class Unprocessable(OrzbobError):
    status_code = 422
    error = "invalid_request"


class PayloadTooLarge(OrzbobError):
    status_code = 413
    error = "payload_too_large"


class ConfigError(Exception):
    """Start-up configuration is wrong; the message names the variable, never its value."""
