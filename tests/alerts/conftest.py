"""Alert tests send real e-mail over SMTP to an aiosmtpd sink on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings
from orzbob.hooks import install_hooks


@pytest.fixture(autouse=True)
def _hooks() -> None:
    install_hooks()


@pytest.fixture
def smtp() -> Iterator[SinkServer]:
    with SinkServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, smtp: SinkServer) -> Settings:
    return settings.model_copy(
        update={"smtp_port": smtp.port, "public_url": "https://cloud.orzbob.test"}
    )
