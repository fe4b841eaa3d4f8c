"""The CLI's HTTP client: API URL and token from flags, the environment or `orz cloud login`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from orzbob.cli.output import fail

if TYPE_CHECKING:
    import httpx

DEFAULT_API_URL = "http://127.0.0.1:8080"


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orz" / "credentials.json"


def save_credentials(api_url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_url": api_url, "token": token}))
    path.chmod(0o600)
    return path


def _saved() -> dict[str, str]:
    try:
        data = json.loads(credentials_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@dataclass
class ApiClient:
    api_url: str
    token: str | None
    # One connection pool per command: a new client per call costs a TLS context each time.
    _http: httpx.Client | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, api_url: str | None, token: str | None) -> ApiClient:
        saved = _saved()
        return cls(
            api_url=(
                api_url or os.environ.get("ORZ_API_URL") or saved.get("api_url") or DEFAULT_API_URL
            ).rstrip("/"),
            token=token or os.environ.get("ORZ_TOKEN") or saved.get("token"),
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.request_raw(method, path, **kwargs)
        if response.status_code >= 400:
            self.fail_for(response)
        return response

    def request_raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response whatever its status (connection and set-up errors still exit)."""
        if not self.token:
            fail(
                "not logged in: no API token. Run `orz cloud login --token …`, "
                "or pass --token or set ORZ_TOKEN"
            )
        if not (self.token.isascii() and self.token.isprintable()):
            fail("the API token has characters no token contains; check --token or ORZ_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        # Loaded when a command first talks to the API, not at start-up: `orz cloud --help`
        # and argument errors answer without it (a tenth of a second; docs/architecture.md).
        import httpx

        try:
            if self._http is None:
                self._http = httpx.Client(timeout=30.0)
            response = self._http.request(method, self.api_url + path, headers=headers, **kwargs)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            fail(
                f"the API URL {self.api_url!r} is not a valid http(s) URL; "
                "check --api-url or ORZ_API_URL"
            )
        except httpx.HTTPError as exc:
            fail(
                f"cannot reach the Orzbob API at {self.api_url} ({exc.__class__.__name__}); "
                "is the service running (`make run`)?"
            )
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(
                f"the server at {self.api_url} answered {method} {path} with something that "
                f"is not JSON (HTTP {response.status_code}); is ORZ_API_URL the Orzbob API?"
            )

    def fail_for(self, response: httpx.Response) -> NoReturn:
        """Exit with one line saying why the API refused or failed."""
        try:
            body = response.json()
            detail = body.get("detail") if isinstance(body, dict) else None
        except ValueError:
            detail = None
        # A proxy's error page is no message: keep its first line at most.
        detail = str(detail) if detail else (_first_text_line(response.text) or "request failed")
        status = response.status_code
        if status == 401:
            fail(
                f"the API token was refused: {detail} (HTTP 401); "
                "run `orz cloud login --token …` with a current token"
            )
        if status >= 500:
            request_id = response.headers.get("x-request-id") or "none"
            fail(
                f"server error at {self.api_url}: {detail} (HTTP {status}, request id {request_id})"
            )
        fail(f"{detail} (HTTP {status})")


def _first_text_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""
