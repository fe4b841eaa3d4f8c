"""Runs reconciliation: which windows, reading Polar's events page by page within its rate
limits, and keeping each run (`polar_reconcile_runs`).

The ledger side of a window is read before Polar's side, in its own short transaction, so
a record shipped meanwhile is found at Polar (matched) rather than reported lost; no
transaction is open while Polar is called.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.catalog.models import Catalog
from orzbob.kit import metrics
from orzbob.kit.db import session_scope
from orzbob.metering.flusher import EVENT_NAME
from orzbob.metering.service import metering_service
from orzbob.polar.client import PolarGateway, PolarRejected, PolarUnavailable
from orzbob.polar.models import ReconcileRun
from orzbob.polar.reconcile import PolarEvent, Report, compare
from orzbob.polar.repository import reconcile_runs
from orzbob.quota.allocation import org_period
from orzbob.quota.periods import Period

log = logging.getLogger(__name__)

Scope = Literal["daily", "period_close", "manual"]
# Called after each page: (events read so far in this window, total when Polar says).
PageFn = Callable[[int, int | None], None]
# Called before each window: (index, number of windows, org id).
WindowFn = Callable[[int, int, uuid.UUID], None]
PAGE_SIZE = 100  # Polar's maximum


@dataclass(frozen=True)
class PeriodSpec:
    kind: Literal["current", "previous", "range"]
    start: datetime | None = None
    end: datetime | None = None

    @property
    def label(self) -> str:
        if self.kind == "range":
            assert self.start and self.end
            return f"{self.start.isoformat()}..{self.end.isoformat()}"
        return self.kind


def parse_period(text: str) -> PeriodSpec:
    """`current`, `previous` or `START..END` (RFC 3339 or dates, UTC when no zone is given)."""
    text = text.strip()
    if text in ("current", "previous"):
        return PeriodSpec(text)  # type: ignore[arg-type]
    start_text, sep, end_text = text.partition("..")
    if not sep:
        raise ValueError(
            f"period {text!r}: use current, previous or START..END (e.g. 2026-11-01..2026-12-01)"
        )
    bounds = []
    for part in (start_text, end_text):
        try:
            value = datetime.fromisoformat(part.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"period {text!r}: {part!r} is not a date or RFC 3339 time") from None
        bounds.append(value if value.tzinfo else value.replace(tzinfo=UTC))
    if bounds[1] <= bounds[0]:
        raise ValueError(f"period {text!r}: the end must be after the start")
    return PeriodSpec("range", bounds[0], bounds[1])


@dataclass(frozen=True)
class Window:
    org_id: uuid.UUID
    start: datetime
    end: datetime
    period: Period | None  # set when the window is one billing period of the org


def _previous(org: Org, now: datetime) -> Period:
    return org_period(org, org_period(org, now).start - timedelta(microseconds=1))


@dataclass
class EventReader:
    """Pages through one window's events, waiting out 429s (honouring Retry-After) and
    retrying network and server errors with backoff; gives up after `max_attempts`."""

    gateway: PolarGateway
    sleep: Callable[[float], None] = time.sleep
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def events(self, window: Window, on_page: PageFn | None = None) -> Iterator[PolarEvent]:
        page, fetched = 1, 0
        while True:
            items, more, total = self._page(window, page)
            for raw in items:
                event = _event(raw)
                if event is not None and _belongs(event, window):
                    yield event
            fetched += len(items)
            if on_page:
                on_page(fetched, total)
            if not more or not items:
                return
            page += 1

    def _page(self, window: Window, page: int) -> tuple[list[Any], bool, int | None]:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self.gateway.list_events_page(
                    name=EVENT_NAME,
                    external_customer_id=str(window.org_id),
                    start=window.start,
                    end=window.end,
                    page=page,
                    limit=PAGE_SIZE,
                )
            except PolarUnavailable as exc:
                if attempt == self.max_attempts:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                    delay *= 0.5 + self.rng.random() / 2
                log.info("reading Polar events: %s; retrying in %.1fs", exc, delay)
                self.sleep(min(delay, self.max_delay))
        raise AssertionError("unreachable")


def _event(raw: Any) -> PolarEvent | None:
    if getattr(raw, "name", None) != EVENT_NAME:
        return None
    stamp = datetime.fromisoformat(str(raw.timestamp).replace("Z", "+00:00"))
    return PolarEvent(
        polar_id=str(raw.id),
        org_id=str(raw.external_customer_id or ""),
        timestamp=stamp.astimezone(UTC),
        metadata=dict(raw.metadata or {}),
    )


def _belongs(event: PolarEvent, window: Window) -> bool:
    # A record belongs to the period of its interval end, and an end exactly on a boundary
    # belongs to the earlier period: Polar's inclusive bounds would count it twice.
    if event.timestamp <= window.start:
        return False
    if window.period is not None and "period_start" in event.metadata:
        try:
            start = datetime.fromisoformat(str(event.metadata["period_start"]))
        except ValueError:
            return True
        return start == window.period.start
    return True


class ReconcileService:
    def windows(
        self, session: Session, spec: PeriodSpec, *, org_id: uuid.UUID | None, now: datetime
    ) -> list[Window]:
        orgs = [account_service.get_org(session, org_id)] if org_id else list(self._orgs(session))
        out = []
        for org in orgs:
            if spec.kind == "range":
                assert spec.start and spec.end
                out.append(Window(org.id, spec.start, spec.end, None))
                continue
            period = org_period(org, now) if spec.kind == "current" else _previous(org, now)
            out.append(Window(org.id, period.start, period.end, period))
        return out

    def _orgs(self, session: Session) -> Iterator[Org]:
        offset = 0
        while batch := account_service.list_orgs(session, limit=500, offset=offset):
            yield from batch
            offset += len(batch)

    def closed_periods_due(
        self, session: Session, *, now: datetime, grace: timedelta, lookback: timedelta
    ) -> tuple[list[Window], datetime | None]:
        """Closed periods not yet reconciled (after `grace`, so the flusher has shipped the
        last minutes), and when the next one falls due."""
        due, next_due = [], None
        for org in self._orgs(session):
            prev = _previous(org, now)
            ready = prev.end + grace
            if now < ready or prev.end < now - lookback:
                upcoming = org_period(org, now).end + grace
                next_due = upcoming if next_due is None else min(next_due, upcoming)
                if now < ready:
                    next_due = min(next_due, ready)
                continue
            done = reconcile_runs.closed_period_done(session, org.id, prev.start)
            if not done and metering_service.has_records(session, org.id, period_start=prev.start):
                due.append(Window(org.id, prev.start, prev.end, prev))
            upcoming = org_period(org, now).end + grace
            next_due = upcoming if next_due is None else min(next_due, upcoming)
        return due, next_due

    def latest(self, session: Session, *, org_id: uuid.UUID | None = None) -> ReconcileRun | None:
        return reconcile_runs.latest(session, org_id=org_id)

    def closed_drift(self, session: Session, *, now: datetime) -> int:
        """Drift found by the period-close runs of the last 24 hours (the alerting gauge)."""
        return reconcile_runs.period_close_drift_since(session, now - timedelta(days=1))

    def open_drift(self, session: Session) -> int | None:
        """Drift of the latest successful daily run (None before the first)."""
        return reconcile_runs.latest_daily_drift(session)


reconcile_service = ReconcileService()


def run_reconcile(
    sessions: sessionmaker[Session],
    gateway: PolarGateway,
    catalog: Catalog,
    *,
    windows: Sequence[Window],
    period_label: str,
    scope: Scope,
    org_id: uuid.UUID | None,
    now: datetime,
    reader: EventReader | None = None,
    on_window: WindowFn | None = None,
    on_page: PageFn | None = None,
) -> ReconcileRun:
    """Compare every window, then keep the run (status `failed` with the reason when Polar
    could not be read; nothing is half-reported)."""
    reader = reader or EventReader(gateway)
    report, error = Report(), None
    try:
        for i, window in enumerate(windows):
            if on_window:
                on_window(i, len(windows), window.org_id)
            with session_scope(sessions) as session:
                if window.period is not None:
                    records = metering_service.records_in(
                        session, window.org_id, period_start=window.period.start
                    )
                else:
                    records = metering_service.records_in(
                        session, window.org_id, after=window.start, upto=window.end
                    )
                session.expunge_all()
            events = list(reader.events(window, on_page))
            period_end = window.period.end if window.period else None
            compare(report, records, events, catalog=catalog, period_end=period_end)
    except (PolarUnavailable, PolarRejected) as exc:
        error = f"Polar could not be read: {exc}"
    run = ReconcileRun(
        scope=scope,
        period=period_label,
        org_id=org_id,
        window_start=windows[0].start if len(windows) == 1 else None,
        window_end=windows[0].end if len(windows) == 1 else None,
        started_at=now,
        finished_at=now,
        status="failed" if error else "ok",
        error=error,
        drift_minutes=report.drift_minutes,
        summary={**report.summary(), "windows": len(windows)},
        items={"items": [item.as_dict() for item in report.items]},
    )
    with session_scope(sessions) as session:
        session.add(run)
        session.flush()
        session.expunge(run)
    metrics.reconcile_runs_total.labels(status=run.status).inc()
    if not error:
        metrics.reconcile_last_success.set(time.time())
    return run


def run_view(run: ReconcileRun) -> dict[str, Any]:
    """The kept report as the API and `--json` show it."""
    return {
        "id": str(run.id),
        "scope": run.scope,
        "period": run.period,
        "org_id": str(run.org_id) if run.org_id else None,
        "window_start": run.window_start.isoformat() if run.window_start else None,
        "window_end": run.window_end.isoformat() if run.window_end else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "status": run.status,
        "error": run.error,
        "drift_minutes": run.drift_minutes,
        **run.summary,
        "items": run.items.get("items", []),
    }
