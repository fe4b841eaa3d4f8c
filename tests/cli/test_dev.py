"""`orz dev`: the bundled local Polar server, synced, with generated local-only credentials."""

from __future__ import annotations

import httpx
import pytest

from orzbob.cli.dev import local_polar_for_dev
from orzbob.config import Settings
from orzbob.jobs import register_jobs
from orzbob.runtime import Runtime


def test_dev_starts_syncs_and_stops_the_local_polar_server(
    runtime: Runtime,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    with local_polar_for_dev(settings, polar_port=0) as (dev, sync):
        dev.check_startup()  # the generated values pass the production checks
        assert dev.billing_enabled and dev.polar_api_url.startswith("http://127.0.0.1:")
        key = dev.polar_api_key.get_secret_value()  # type: ignore[union-attr]
        secret = dev.polar_webhook_secret.get_secret_value()  # type: ignore[union-attr]
        assert key.startswith("polar_oat_dev") and secret.startswith("whsec_dev")
        sync(runtime)
        stats = httpx.get(f"{dev.polar_api_url}/_control/stats").json()
        hooks = httpx.get(f"{dev.polar_api_url}/_control/webhooks").json()
        url = dev.polar_api_url
    assert (stats["meters"], stats["products"]) == (4, 3)
    assert hooks["url"] == f"http://127.0.0.1:{settings.port}/v1/webhooks/polar"
    assert hooks["secret_set"] is True
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_control/health", timeout=2)
    out = capsys.readouterr().out
    assert key not in out and secret not in out
    assert "local dev values" in out and "polar sync: 7 change(s) made" in out


def test_plan_changes_always_run_and_customers_only_with_billing(runtime: Runtime) -> None:
    register_jobs(runtime)
    names = [j.name for j in runtime.scheduler.jobs]
    assert "polar.plan_changes" in names and "polar.customers" not in names
    assert names.index("metering.checkpoint") < names.index("polar.plan_changes")
