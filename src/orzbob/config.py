"""One settings class, read from the environment and `.env`."""

from __future__ import annotations

import re
import uuid
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orzbob.kit.errors import ConfigError

LOCAL_POLAR_URL = "http://127.0.0.1:8765"
POLAR_TOKEN_PREFIXES = ("polar_oat_", "polar_pat_", "polar_at_o_", "polar_at_u_")
_MAILBOX = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z]{2,}$")
_PLACEHOLDER = re.compile(
    r"^(|changeme|change-me|replace-?me|todo|xxx+|secret|<.*>|your[-_].*)$", re.I
)
# Words the templates and examples put where a real secret goes, e.g. the shipped Secret's
# `REPLACE_WITH_whsec_SECRET`: refused wherever they appear in the value.
_PLACEHOLDER_WORDS = re.compile(
    r"replace|change[-_]?me|placeholder|your[-_]|example|todo|fixme|<|>|\$\{", re.I
)


def is_placeholder(value: str) -> bool:
    """A template's stand-in rather than a secret Polar issued."""
    if _PLACEHOLDER.match(value) or _PLACEHOLDER_WORDS.search(value):
        return True
    body = value.removeprefix("whsec_")
    for prefix in POLAR_TOKEN_PREFIXES:
        body = body.removeprefix(prefix)
    return _PLACEHOLDER.match(body) is not None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    env: Literal["development", "test", "production"] = Field(
        "development", validation_alias="ORZBOB_ENV"
    )
    database_url: str = Field("sqlite:///./var/orzbob.db", validation_alias="DATABASE_URL")
    host: str = Field("127.0.0.1", validation_alias="ORZBOB_HOST")
    port: int = Field(8080, validation_alias="ORZBOB_PORT")
    public_url: str = Field("http://127.0.0.1:8080", validation_alias="ORZBOB_PUBLIC_URL")
    catalog_path: Path | None = Field(None, validation_alias="ORZBOB_CATALOG")

    billing_enabled: bool = Field(False, validation_alias="BILLING_ENABLED")
    polar_api_key: SecretStr | None = Field(None, validation_alias="POLAR_API_KEY")
    polar_webhook_secret: SecretStr | None = Field(None, validation_alias="POLAR_WEBHOOK_SECRET")
    polar_organization_id: str | None = Field(
        None, validation_alias=AliasChoices("POLAR_ORGANIZATION_ID", "POLAR_PROJECT_ID")
    )
    polar_api_url: str = Field(LOCAL_POLAR_URL, validation_alias="POLAR_API_URL")
    polar_timeout_seconds: float = Field(10.0, validation_alias="POLAR_TIMEOUT_SECONDS")

    smtp_host: str = Field("127.0.0.1", min_length=1, validation_alias="SMTP_HOST")
    smtp_port: int = Field(1025, ge=1, le=65535, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(None, validation_alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(None, validation_alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, validation_alias="SMTP_STARTTLS")
    # CA bundle that signs the SMTP server's certificate, when it is not a public CA.
    smtp_ca_file: Path | None = Field(None, validation_alias="SMTP_CA_FILE")
    smtp_timeout_seconds: float = Field(30.0, gt=0, le=600, validation_alias="SMTP_TIMEOUT_SECONDS")
    # "Orzbob Billing <billing@orzbob.cloud>" or a bare address.
    email_from_address: str = Field("billing@orzbob.cloud", validation_alias="EMAIL_FROM_ADDRESS")
    # Polar's customer portal for this organization (https://polar.sh/<org-slug>/portal):
    # alert e-mails link there for orgs that are Polar customers, else to ORZBOB_PUBLIC_URL.
    polar_customer_portal_url: str | None = Field(
        None, validation_alias="POLAR_CUSTOMER_PORTAL_URL"
    )
    alerts_send_interval_seconds: int = Field(
        10, ge=1, validation_alias="ALERTS_SEND_INTERVAL_SECONDS"
    )
    # The alert sender's lease on the alerts it claimed (real seconds), renewed every third of
    # it while they are being sent: what a sender that died holding claims costs in delay
    # (a restarted worker with a stable ORZBOB_WORKER_ID takes its own back at once).
    alert_lease_seconds: int = Field(
        30, ge=1, le=3600, validation_alias="ORZBOB_ALERT_LEASE_SECONDS"
    )
    # Alerts are raised as usage is written; this periodic pass is only the safety net.
    alerts_catchup_interval_seconds: int = Field(
        900, ge=1, validation_alias="ALERTS_CATCHUP_INTERVAL_SECONDS"
    )

    test_clock: bool = Field(False, validation_alias="ORZBOB_TEST_CLOCK")
    run_jobs: bool = Field(True, validation_alias="ORZBOB_RUN_JOBS")
    access_log: bool = Field(False, validation_alias="ORZBOB_ACCESS_LOG")
    # Where `orz worker` serves /metrics (the counters only workers move); unset: nowhere.
    metrics_port: int | None = Field(None, ge=0, le=65535, validation_alias="ORZBOB_METRICS_PORT")
    # A job running longer than this makes the worker's /healthz (on the metrics port) fail,
    # so its liveness probe restarts it: the longest job, a sweep pausing thousands of
    # instances, takes under a minute.
    job_stuck_seconds: int = Field(900, ge=60, validation_alias="ORZBOB_JOB_STUCK_SECONDS")
    # A name for this process that survives its restarts (a pod or unit name), unique among
    # live processes: at start the flusher takes back the claims its previous run left.
    worker_id: str | None = Field(
        None,
        min_length=1,
        max_length=48,
        pattern=r"^[\w.:@-]+$",
        validation_alias="ORZBOB_WORKER_ID",
    )
    flush_lease_seconds: int = Field(30, ge=1, le=3600, validation_alias="FLUSH_LEASE_SECONDS")
    flush_interval_seconds: int = Field(60, ge=1, validation_alias="FLUSH_INTERVAL_SECONDS")
    flush_batch_size: int = Field(1000, ge=1, le=10000, validation_alias="FLUSH_BATCH_SIZE")
    heartbeat_timeout_seconds: int = Field(300, ge=30, validation_alias="HEARTBEAT_TIMEOUT_SECONDS")
    sweep_interval_seconds: int = Field(60, ge=1, validation_alias="SWEEP_INTERVAL_SECONDS")
    max_body_bytes: int = Field(1_048_576, validation_alias="ORZBOB_MAX_BODY_BYTES")

    @field_validator("smtp_ca_file", "polar_customer_portal_url", "smtp_username", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        # `.env.example` leaves optional values blank; blank means "not set".
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("email_from_address")
    @classmethod
    def _from_address(cls, v: str) -> str:
        _, address = parseaddr(v)
        if not _MAILBOX.match(address) or any(c in v for c in "\r\n"):
            raise ValueError(
                "EMAIL_FROM_ADDRESS must be an e-mail address such as billing@example.com "
                "or Billing <billing@example.com>"
            )
        return v.strip()

    @property
    def email_from_mailbox(self) -> str:
        return parseaddr(self.email_from_address)[1]

    @model_validator(mode="after")
    def _test_clock_not_in_production(self) -> Settings:
        if self.test_clock and self.env == "production":
            raise ValueError("ORZBOB_TEST_CLOCK cannot be enabled when ORZBOB_ENV=production")
        return self

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_startup(self) -> None:
        """Refuse to start with missing or malformed secrets when billing is on.

        Messages name the variable and never its value.
        """
        if not self.billing_enabled:
            return
        key = self.polar_api_key.get_secret_value() if self.polar_api_key else ""
        if not key:
            raise ConfigError("POLAR_API_KEY is required when BILLING_ENABLED=true")
        if is_placeholder(key) or not key.startswith(POLAR_TOKEN_PREFIXES) or " " in key:
            raise ConfigError(
                "POLAR_API_KEY is malformed: expected a Polar access token "
                "(it starts with polar_oat_)"
            )
        secret = self.polar_webhook_secret.get_secret_value() if self.polar_webhook_secret else ""
        if not secret:
            raise ConfigError("POLAR_WEBHOOK_SECRET is required when BILLING_ENABLED=true")
        if is_placeholder(secret) or len(secret) < 16 or any(c.isspace() for c in secret):
            raise ConfigError(
                "POLAR_WEBHOOK_SECRET is malformed: use the endpoint secret Polar shows "
                "(whsec_…, at least 16 characters)"
            )
        if self.polar_organization_id:
            try:
                uuid.UUID(self.polar_organization_id)
            except ValueError:
                raise ConfigError(
                    "POLAR_ORGANIZATION_ID (or POLAR_PROJECT_ID) must be a UUID"
                ) from None
        if self.env == "production" and not self.polar_api_url.startswith("https://"):
            raise ConfigError("POLAR_API_URL must be an https:// URL in production")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
