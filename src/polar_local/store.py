"""The local server's private SQLite store (SQLAlchemy Core, its own MetaData, WAL).

Wire objects (customers, meters, products, subscriptions, ...) are kept as JSON documents in
one `resources` table: the server is small and filters them in Python. Events get real columns
because they are the volume, are deduplicated by a unique constraint, and are summed in SQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    Text,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from .common import JSON as JSONDict
from .common import new_id
from .tables import (
    events,
    meta,
    metadata_obj,
    requests_log,
    resources,
    webhook_attempts,
    webhook_events,
)

MAX_LOGGED_BODY = 1024 * 1024
_EVENT_COLUMNS = [c.name for c in events.columns if c.name != "seq"]
_PLAIN_COLUMNS = [name for name in _EVENT_COLUMNS if name != "metadata"]
_plain_values = itemgetter(*_PLAIN_COLUMNS)
_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join([*_PLAIN_COLUMNS, 'metadata'])}) "
    f"VALUES ({', '.join('?' * (len(_PLAIN_COLUMNS) + 1))}) ON CONFLICT DO NOTHING"
)


@dataclass
class EventQuery:
    """Event selection. Identity lists are OR-ed: an event matches if its customer_id is in
    `customer_ids` or its external_customer_id is in `external_customer_ids`."""

    customer_ids: list[str] | None = None
    external_customer_ids: list[str] | None = None
    names: list[str] | None = None
    ts_from: float | None = None
    ts_to: float | None = None
    ingested_from: float | None = None
    ingested_to: float | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.customer_ids is not None or self.external_customer_ids is not None:
            where.append(
                or_(
                    events.c.customer_id.in_(self.customer_ids or []),
                    events.c.external_customer_id.in_(self.external_customer_ids or []),
                )
            )
        if self.names is not None:
            where.append(events.c.name.in_(self.names))
        bounds = [
            (events.c.ts, self.ts_from, self.ts_to),
            (events.c.ingested_at, self.ingested_from, self.ingested_to),
        ]
        for column, low, high in bounds:
            if low is not None:
                where.append(column >= low)
            if high is not None:
                where.append(column <= high)
        return where


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.engine: Engine = create_engine(
            f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata_obj.create_all(self.engine)
        self.organization_id = self._meta_get_or_set("organization_id", new_id())

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        # One writer at a time: SQLite would otherwise answer "database is locked" under load.
        with self.lock, self.engine.begin() as conn:
            yield conn

    def _meta_get_or_set(self, key: str, default: str) -> str:
        with self.write() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == key))
            if value is None:
                conn.execute(meta.insert().values(key=key, value=default))
                return default
            return str(value)

    # -- counters --------------------------------------------------------------------------
    def incr(self, key: str, n: int = 1, conn: Connection | None = None) -> None:
        stmt = sqlite_insert(meta).values(key=f"counter:{key}", value=str(n))
        stmt = stmt.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={"value": func.cast(func.cast(meta.c.value, Integer) + n, Text)},
        )
        if conn is not None:
            conn.execute(stmt)
            return
        with self.write() as c:
            c.execute(stmt)

    def counter(self, key: str) -> int:
        with self.engine.connect() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == f"counter:{key}"))
        return int(value or 0)

    # -- resources (wire objects as JSON documents) ----------------------------------------
    def get(self, kind: str, id_: str) -> JSONDict | None:
        with self.engine.connect() as conn:
            data = conn.scalar(
                select(resources.c.data).where(resources.c.kind == kind, resources.c.id == id_)
            )
        return dict(data) if data is not None else None

    def all(self, kind: str) -> list[JSONDict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(resources.c.data).where(resources.c.kind == kind).order_by(resources.c.seq)
            )
            return [dict(r.data) for r in rows]

    def put(self, kind: str, obj: JSONDict) -> None:
        stmt = sqlite_insert(resources).values(kind=kind, id=obj["id"], data=obj)
        stmt = stmt.on_conflict_do_update(index_elements=[resources.c.id], set_={"data": obj})
        with self.write() as conn:
            conn.execute(stmt)

    def count(self, kind: str) -> int:
        with self.engine.connect() as conn:
            n = conn.scalar(
                select(func.count()).select_from(resources).where(resources.c.kind == kind)
            )
        return int(n or 0)

    # -- events ----------------------------------------------------------------------------
    def ingest(self, rows: list[JSONDict]) -> tuple[int, int]:
        """Insert events, skipping any whose (organization, external_id) is already stored or
        repeated earlier in the batch. Returns (inserted, duplicates)."""
        with self.write() as conn:
            wanted = [r["external_id"] for r in rows if r["external_id"] is not None]
            seen = self._existing_external_ids(conn, wanted)
            fresh = []
            for row in rows:
                ext = row["external_id"]
                if ext is not None:
                    if ext in seen:
                        continue
                    seen.add(ext)
                fresh.append(row)
            if fresh:
                # Plain tuples straight to the driver's executemany (the metadata encoded
                # as the JSON column would): a batch is volume, not a place for per-row
                # parameter processing.
                conn.exec_driver_sql(
                    _INSERT_EVENTS,
                    [(*_plain_values(row), json.dumps(row["metadata"])) for row in fresh],
                )
            duplicates = len(rows) - len(fresh)
            if duplicates:
                self.incr("duplicates", duplicates, conn)
            self.incr("ingest_requests", 1, conn)
        return len(fresh), duplicates

    def _existing_external_ids(self, conn: Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            rows = conn.execute(
                select(events.c.external_id).where(
                    events.c.organization_id == self.organization_id,
                    events.c.external_id.in_(chunk),
                )
            )
            found.update(r.external_id for r in rows)
        return found

    def delete_event(self, external_id: str) -> bool:
        """Remove an event by its external_id (a control call: Polar losing an event)."""
        with self.write() as conn:
            result = conn.execute(
                events.delete().where(
                    events.c.organization_id == self.organization_id,
                    events.c.external_id == external_id,
                )
            )
        return bool(result.rowcount)

    def patch_event_metadata(self, external_id: str, changes: JSONDict) -> JSONDict | None:
        """Merge `changes` into an event's metadata (a control call: Polar holding other
        figures than were sent). Returns the event, or None when there is no such event."""
        with self.write() as conn:
            row = conn.execute(
                select(*_event_cols()).where(
                    events.c.organization_id == self.organization_id,
                    events.c.external_id == external_id,
                )
            ).first()
            if row is None:
                return None
            metadata = {**(row.metadata or {}), **changes}
            conn.execute(update(events).where(events.c.id == row.id).values(metadata=metadata))
        return {**dict(row._mapping), "metadata": metadata}

    def get_event(self, id_: str) -> JSONDict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_event_cols()).where(events.c.id == id_)).first()
        return dict(row._mapping) if row else None

    def event_id_for_ref(self, ref: str) -> str | None:
        """Resolve a parent reference: a Polar event id or the parent's external_id."""
        with self.engine.connect() as conn:
            found = conn.scalar(
                select(events.c.id).where(or_(events.c.id == ref, events.c.external_id == ref))
            )
        return str(found) if found else None

    def select_events(
        self, q: EventQuery, *, descending: bool = True, limit: int | None = None, offset: int = 0
    ) -> list[JSONDict]:
        order = (
            [events.c.ts.desc(), events.c.seq.desc()] if descending else [events.c.ts, events.c.seq]
        )
        stmt = select(*_event_cols()).where(*q.clauses()).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def count_events(self, q: EventQuery) -> int:
        with self.engine.connect() as conn:
            n = conn.scalar(select(func.count()).select_from(events).where(*q.clauses()))
        return int(n or 0)

    def sum_event_metadata(self, key: str, q: EventQuery) -> float:
        """Sum a numeric metadata key in SQL; non-numeric values are skipped like Polar's."""
        path = '$."' + key.replace('"', '\\"') + '"'
        numeric = func.json_type(events.c.metadata, path).in_(["integer", "real"])
        value = case((numeric, func.json_extract(events.c.metadata, path)), else_=None)
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.total(value)).select_from(events).where(*q.clauses()))
        return float(total or 0.0)

    def event_names(self) -> list[JSONDict]:
        stmt = (
            select(events.c.name, func.count(), func.min(events.c.ts), func.max(events.c.ts))
            .group_by(events.c.name)
            .order_by(func.max(events.c.ts).desc())
        )
        with self.engine.connect() as conn:
            return [
                {"name": n, "occurrences": c, "first_seen": lo, "last_seen": hi}
                for n, c, lo, hi in conn.execute(stmt)
            ]

    # -- request log -----------------------------------------------------------------------
    def log_request(
        self,
        method: str,
        path: str,
        query: str,
        status: int | None,
        fault: str | None,
        body: bytes,
    ) -> None:
        text = body[:MAX_LOGGED_BODY].decode("utf-8", errors="replace")
        with self.write() as conn:
            conn.execute(
                requests_log.insert().values(
                    at=time.time(),
                    method=method,
                    path=path,
                    query=query,
                    status=status,
                    fault=fault,
                    body=text,
                )
            )

    def requests(self, path_prefix: str = "", limit: int = 100) -> list[JSONDict]:
        stmt = (
            select(requests_log)
            .where(requests_log.c.path.startswith(path_prefix, autoescape=True))
            .order_by(requests_log.c.seq.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # -- webhook deliveries ----------------------------------------------------------------
    def record_webhook(self, row: JSONDict) -> None:
        with self.write() as conn:
            conn.execute(webhook_events.insert().values(**row))

    def record_attempt(self, row: JSONDict, state: str) -> None:
        with self.write() as conn:
            conn.execute(webhook_attempts.insert().values(**row))
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.webhook_id == row["webhook_id"])
                .values(state=state, attempts=row["attempt"])
            )

    def webhook_deliveries(
        self, *, webhook_id: str | None = None, type_: str | None = None, limit: int = 100
    ) -> list[JSONDict]:
        stmt = select(webhook_events).order_by(webhook_events.c.seq).limit(limit)
        if webhook_id is not None:
            stmt = stmt.where(webhook_events.c.webhook_id == webhook_id)
        if type_ is not None:
            stmt = stmt.where(webhook_events.c.type == type_)
        with self.engine.connect() as conn:
            items = [dict(r._mapping) for r in conn.execute(stmt)]
            ids = [i["webhook_id"] for i in items]
            attempts = conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.webhook_id.in_(ids))
                .order_by(webhook_attempts.c.seq)
            )
            by_id: dict[str, list[JSONDict]] = {}
            for a in attempts:
                by_id.setdefault(a.webhook_id, []).append(dict(a._mapping))
        for item in items:
            item["attempt_log"] = by_id.get(item["webhook_id"], [])
        return items

    def reset(self) -> None:
        with self.write() as conn:
            for table in (events, resources, requests_log, webhook_events, webhook_attempts):
                conn.execute(delete(table))
            conn.execute(delete(meta).where(meta.c.key != "organization_id"))


def _event_cols() -> list[Column[Any]]:
    return [events.c[name] for name in _EVENT_COLUMNS]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
