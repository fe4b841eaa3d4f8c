import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from orzbob.config import Settings
from orzbob.kit.errors import ConfigError

KEY = "polar_oat_" + "k" * 40
SECRET = "whsec_" + "s" * 40


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg, arg-type]


def test_billing_disabled_needs_no_secrets() -> None:
    make(billing_enabled=False).check_startup()


@pytest.mark.parametrize(
    ("kw", "variable"),
    [
        ({"polar_webhook_secret": SECRET}, "POLAR_API_KEY"),
        ({"polar_api_key": "changeme", "polar_webhook_secret": SECRET}, "POLAR_API_KEY"),
        (
            {"polar_api_key": "sk_live_abcdef1234567890", "polar_webhook_secret": SECRET},
            "POLAR_API_KEY",
        ),
        ({"polar_api_key": KEY}, "POLAR_WEBHOOK_SECRET"),
        ({"polar_api_key": KEY, "polar_webhook_secret": "short"}, "POLAR_WEBHOOK_SECRET"),
        (
            {
                "polar_api_key": KEY,
                "polar_webhook_secret": SECRET,
                "polar_organization_id": "not-a-uuid",
            },
            "POLAR_ORGANIZATION_ID",
        ),
    ],
)
def test_billing_enabled_refuses_missing_or_malformed_secrets(
    kw: dict[str, str], variable: str
) -> None:
    settings = make(billing_enabled=True, **kw)
    with pytest.raises(ConfigError) as exc:
        settings.check_startup()
    assert variable in str(exc.value)
    for value in kw.values():
        if len(value) > 6:
            assert value not in str(exc.value)


def test_valid_secrets_start_and_are_never_shown() -> None:
    settings = make(billing_enabled=True, polar_api_key=KEY, polar_webhook_secret=SECRET)
    settings.check_startup()
    assert KEY not in repr(settings) and SECRET not in repr(settings)


def test_project_id_is_an_alias_of_organization_id(monkeypatch: pytest.MonkeyPatch) -> None:
    org = "0b0b0b0b-0000-4000-8000-000000000001"
    monkeypatch.setenv("POLAR_PROJECT_ID", org)
    assert make().polar_organization_id == org


def test_test_clock_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="production"):
        make(env="production", test_clock=True)


def test_server_refuses_to_start_without_polar_key(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLAR_", "BILLING"))}
    env.update(BILLING_ENABLED="true", DATABASE_URL="sqlite:///:memory:")
    proc = subprocess.run(
        [sys.executable, "-m", "orzbob.cli", "server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert proc.returncode != 0
    assert "POLAR_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def _template_values() -> dict[str, str]:
    """The values the shipped Secret template holds."""
    import yaml

    with open("deploy/polar-credentials.secret.yaml") as f:
        doc = yaml.safe_load(f)
    return dict(doc["stringData"])


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POLAR_WEBHOOK_SECRET", "REPLACE_WITH_whsec_SECRET"),
        ("POLAR_WEBHOOK_SECRET", "whsec_REPLACE_ME_WITH_THE_REAL_ONE"),
        ("POLAR_WEBHOOK_SECRET", "whsec_xxxxxxxxxxxxxxxxxxxxxxxx"),
        ("POLAR_API_KEY", "polar_oat_REPLACE_WITH_TOKEN_FROM_POLAR"),
        ("POLAR_API_KEY", "polar_oat_xxxxxxxxxxxxxxxxxxxxxxxx"),
        ("POLAR_API_KEY", "polar_oat_<your-token-here>"),
    ],
)
def test_placeholder_secrets_are_refused(variable: str, value: str) -> None:
    kw: dict[str, object] = {"polar_api_key": KEY, "polar_webhook_secret": SECRET}
    kw["polar_api_key" if variable == "POLAR_API_KEY" else "polar_webhook_secret"] = value
    with pytest.raises(ConfigError, match=variable) as exc:
        make(billing_enabled=True, **kw).check_startup()
    assert value not in str(exc.value)


def test_the_shipped_secret_template_cannot_start_the_service() -> None:
    values = _template_values()
    for variable in ("POLAR_API_KEY", "POLAR_WEBHOOK_SECRET", "POLAR_ORGANIZATION_ID"):
        kw: dict[str, object] = {"polar_api_key": KEY, "polar_webhook_secret": SECRET}
        key = {"POLAR_API_KEY": "polar_api_key", "POLAR_WEBHOOK_SECRET": "polar_webhook_secret"}
        kw[key.get(variable, "polar_organization_id")] = values[variable]
        with pytest.raises(ConfigError, match=variable):
            make(billing_enabled=True, **kw).check_startup()
