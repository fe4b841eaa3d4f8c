"""Where instances actually run. The default provider runs nothing heavy: it records the
transitions, and the heartbeat API drives activity (docs/spec.md §2)."""

from __future__ import annotations

import logging
from typing import Protocol

from orzbob.instances.models import Instance

log = logging.getLogger(__name__)


class Provider(Protocol):
    name: str

    def provision(self, instance: Instance) -> None: ...

    def pause(self, instance: Instance) -> None: ...

    def resume(self, instance: Instance) -> None: ...

    def terminate(self, instance: Instance) -> None: ...


class LocalProvider:
    """Runs nothing; a real provider (Kubernetes) must not call out while rows are locked:
    it would act on committed transitions through an outbox instead."""

    name = "local"

    def provision(self, instance: Instance) -> None:
        log.info("provider: instance %s (%s) provisioned", instance.id, instance.tier)

    def pause(self, instance: Instance) -> None:
        log.info("provider: instance %s paused", instance.id)

    def resume(self, instance: Instance) -> None:
        log.info("provider: instance %s resumed", instance.id)

    def terminate(self, instance: Instance) -> None:
        log.info("provider: instance %s terminated", instance.id)


default_provider = LocalProvider()
