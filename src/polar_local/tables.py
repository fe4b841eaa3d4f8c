"""Tables of the local server's private SQLite store (its own MetaData, built by create_all)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata_obj = MetaData()

meta = Table("meta", metadata_obj, Column("key", String, primary_key=True), Column("value", Text))

events = Table(
    "events",
    metadata_obj,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String, nullable=False, unique=True),
    Column("organization_id", String, nullable=False),
    Column("external_id", String, nullable=True),
    Column("name", String, nullable=False, index=True),
    Column("customer_id", String, nullable=True, index=True),
    Column("external_customer_id", String, nullable=True, index=True),
    Column("member_id", String, nullable=True),
    Column("external_member_id", String, nullable=True),
    Column("parent_ref", String, nullable=True),
    Column("timestamp", String, nullable=False),
    Column("ts", Float, nullable=False, index=True),
    Column("ingested_at", Float, nullable=False),
    Column("metadata", JSON, nullable=False),
    UniqueConstraint("organization_id", "external_id", name="uq_events_org_external_id"),
)

resources = Table(
    "resources",
    metadata_obj,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String, nullable=False, index=True),
    Column("id", String, nullable=False, unique=True),
    Column("data", JSON, nullable=False),
)

requests_log = Table(
    "requests",
    metadata_obj,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("method", String, nullable=False),
    Column("path", String, nullable=False, index=True),
    Column("query", Text, nullable=False),
    Column("status", Integer, nullable=True),
    Column("fault", String, nullable=True),
    Column("body", Text, nullable=False),
)

webhook_events = Table(
    "webhook_events",
    metadata_obj,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", String, nullable=False, unique=True),
    Column("type", String, nullable=False),
    Column("url", String, nullable=True),
    Column("subscription_id", String, nullable=True),
    Column("payload", Text, nullable=False),
    Column("state", String, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata_obj,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", String, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("webhook_timestamp", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("success", Boolean, nullable=False),
)
