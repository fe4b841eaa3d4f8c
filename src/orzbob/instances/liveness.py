"""What lower domains may read of an instance's liveness, through the hooks they offer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, ColumnExpressionArgument

from orzbob.instances.repository import instance_repository


def last_seen_of(instance_id: ColumnExpressionArgument[uuid.UUID]) -> ColumnElement[datetime]:
    """The last sign of life of the instance whose id `instance_id` holds, as a correlated
    subquery (metering's `last_seen_hooks`: the checkpoint never counts past it)."""
    return instance_repository.last_seen_of(instance_id)
