from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: str = Field(min_length=1, max_length=32)
    name: str | None = Field(None, min_length=1, max_length=100)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: StrictBool = Field(
        description="Whether a person or agent did something since the last beat."
    )
    source: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",  # Rust regex: $ is the very end
        description="What was active: ssh, ide, terminal, job, or another short lowercase name.",
        examples=["ide"],
    )


MAX_BEATS = 1000


class BeatIn(Heartbeat):
    instance_id: uuid.UUID


class BulkHeartbeats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beats: list[BeatIn] = Field(
        min_length=1,
        max_length=MAX_BEATS,
        description=f"Up to {MAX_BEATS} beats; several for one instance count as one (active "
        "if any was).",
    )


class PausedOut(BaseModel):
    instance_id: uuid.UUID
    reason: str


class BulkHeartbeatsOut(BaseModel):
    accepted: int = Field(description="Beats applied to live (running, paused) instances.")
    unknown: int = Field(description="Beats for ids that are not instances the caller may beat.")
    stopped: int = Field(description="Beats for stopped instances: their agents should shut down.")
    duplicates: int = Field(description="Extra beats for an instance already in this request.")
    unknown_ids: list[uuid.UUID]
    stopped_ids: list[uuid.UUID]
    paused: list[PausedOut] = Field(
        description="Instances these beats found at a cap and paused (reason = the cap)."
    )


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    tier: str
    state: str
    reason: str | None
    created_at: datetime
    state_changed_at: datetime
    run_started_at: datetime | None
    last_seen_at: datetime
    last_active_at: datetime
    last_active_source: str | None = Field(
        description="What was active at the last active heartbeat (ssh, ide, …)."
    )
    stopped_at: datetime | None


class HeartbeatOut(InstanceOut):
    notice: str | None = Field(
        None, description="Set when this heartbeat found a cap reached and paused the instance."
    )
