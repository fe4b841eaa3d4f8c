"""The control API resets data and injects faults without authentication: a server that was not
started for development or tests refuses it, while its Polar API keeps working."""

from __future__ import annotations

from pathlib import Path

import httpx

from polar_local import create_app, run_in_thread
from tests.polar_local.polar_local_support import TOKEN


def test_control_api_is_refused_unless_enabled(tmp_path: Path) -> None:
    with run_in_thread(create_app(tmp_path / "polar.db")) as url:
        for method, path in (("POST", "/_control/reset"), ("GET", "/_control/stats")):
            response = httpx.request(method, f"{url}{path}")
            assert response.status_code == 403, response.text
            assert response.json()["error"] == "ControlDisabled"
        polar_api = httpx.get(f"{url}/v1/meters/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert polar_api.status_code == 200, polar_api.text


def test_control_api_answers_when_started_for_tests(tmp_path: Path) -> None:
    app = create_app(tmp_path / "polar.db", control_api=True)
    with run_in_thread(app) as url:
        assert httpx.post(f"{url}/_control/reset").json() == {"ok": True}
        assert httpx.get(f"{url}/_control/stats").status_code == 200
