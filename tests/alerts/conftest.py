"""Alert tests send real e-mail over SMTP to an aiosmtpd sink on a free loopback port."""

from __future__ import annotations

import pytest

from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings


@pytest.fixture
def settings(settings: Settings, smtp: SinkServer) -> Settings:
    return settings.model_copy(
        update={"smtp_port": smtp.port, "public_url": "https://cloud.orzbob.test"}
    )
