"""Usage records shipped from the ledger to the local Polar server over HTTP, per second, for
a sweep of batch sizes; then a soak: records written at a steady rate through the service path
while the flusher runs, with the `orzbob_usage_meter_queue` gauge sampled every second.

The local server keeps events in SQLite; its request log is off so that the figures are about
the pipeline (claim → SDK → HTTP → ingest → mark), not the stand-in's bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import SecretStr

from bench.common import Timer, make_runtime, postgres_available, record, row, scratch_database
from orzbob.accounts.models import Org
from orzbob.accounts.service import account_service
from orzbob.instances.service import instance_service
from orzbob.kit.metrics import REGISTRY
from orzbob.metering.flusher import Flusher
from orzbob.metering.models import UsageSegment
from orzbob.metering.service import metering_service
from orzbob.polar.client import PolarGateway
from orzbob.quota.allocation import UsageDraft
from orzbob.runtime import Runtime
from polar_local import create_app, run_in_thread

INSTANCES = 5  # the usage-only plan's running limit


@dataclass
class Ledger:
    org_id: uuid.UUID
    instances: list[tuple[uuid.UUID, uuid.UUID]]  # (instance, open segment)
    cursor: datetime  # the next free minute of every instance

    def write(self, rt: Runtime, n: int) -> None:
        """`n` one-minute records through allocation (rollups and all), in one transaction."""
        per = -(-n // len(self.instances))
        drafts = [
            UsageDraft(
                self.org_id,
                inst,
                seg,
                "small",
                self.cursor + timedelta(minutes=m),
                self.cursor + timedelta(minutes=m + 1),
                1,
            )
            for m in range(per)
            for inst, seg in self.instances
        ][:n]
        self.cursor += timedelta(minutes=per)
        with rt.session() as s:
            org = s.get(Org, self.org_id)
            assert org is not None
            metering_service.record(s, org, drafts, catalog=rt.catalog, now=datetime.now(UTC))


def _ledger(rt: Runtime) -> Ledger:
    now = rt.clock.now()
    with rt.session() as s:
        org = account_service.create_org(
            s,
            name="bench",
            billing_emails=["ops@bench.test"],
            plan_id="usage-only",
            catalog=rt.catalog,
            now=now,
        )
        pairs = []
        for _ in range(INSTANCES):
            inst = instance_service.create(
                s, org.id, tier="small", name=None, catalog=rt.catalog, now=now
            )
            seg = s.query(UsageSegment).filter_by(instance_id=inst.id).one()
            pairs.append((inst.id, seg.id))
    # Records start after the sign-up moment and stay well before real time.
    return Ledger(org.id, pairs, now)


@contextmanager
def _polar() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            f"{tmp}/polar.db",
            accept_future_timestamps=True,
            record_requests=False,
            control_api=True,
        )
        with run_in_thread(app) as url:
            yield url


class _NullSink:
    """A minimal ingest endpoint that accepts every batch and drops it: plain asyncio HTTP/1.1
    with keep-alive, on a thread, so the figure is the flusher's own cost."""

    REPLY = b'{"inserted":0,"duplicates":0}'

    def __init__(self) -> None:
        self.requests = 0
        self.clients: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + b"content-length: %d\r\n\r\n" % len(self.REPLY)
                    + self.REPLY
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        finally:
            self.clients.discard(writer)

    @contextmanager
    def running(self) -> Iterator[str]:
        loop = asyncio.new_event_loop()
        ready: list[int] = []

        async def start() -> asyncio.Server:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            ready.append(server.sockets[0].getsockname()[1])
            return server

        server = loop.run_until_complete(start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{ready[0]}"
        finally:

            async def shutdown() -> None:
                server.close()
                for client in list(self.clients):  # each handler then ends on EOF
                    client.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def bench_null_sink(kind: str, records: int, batch_size: int) -> None:
    sink = _NullSink()
    with scratch_database(kind) as db, sink.running() as url:
        rt = make_runtime(db)
        ledger = _ledger(rt)
        for start in range(0, records, 1000):
            ledger.write(rt, min(1000, records - start))
        flusher = _flusher(rt, url, batch_size)
        with Timer() as t:
            report = flusher.flush()
        assert report.sent == records, (report, records)
        flusher.gateway.close()
        rt.engine.dispose()
    row(
        f"{kind}: null sink, batch {batch_size:>5} ({sink.requests} requests)",
        f"{records / t.seconds:>10,.0f} records/s",
    )
    record(
        f"flusher → null sink ({kind}, batch {batch_size:,})",
        records / t.seconds,
        "records/s",
        minimum=20_000,
    )


def _flusher(rt: Runtime, url: str, batch_size: int) -> Flusher:
    settings = rt.settings.model_copy(
        update={
            "billing_enabled": True,
            "polar_api_url": url,
            "polar_api_key": SecretStr("polar_oat_" + "b" * 40),
            "polar_timeout_seconds": 60.0,
        }
    )
    return Flusher(sessions=rt.sessions, gateway=PolarGateway(settings), batch_size=batch_size)


def _events(url: str) -> int:
    return int(httpx.get(f"{url}/_control/stats", timeout=30).json()["events"])


def bench_batches(kind: str, records: int, sizes: list[int]) -> None:
    for size in sizes:
        with scratch_database(kind) as db, _polar() as url:
            rt = make_runtime(db)
            ledger = _ledger(rt)
            for start in range(0, records, 1000):
                ledger.write(rt, min(1000, records - start))
            flusher = _flusher(rt, url, size)
            with Timer() as t:
                report = flusher.flush()
            assert report.sent == records == _events(url), (report, records)
            flusher.gateway.close()
            rt.engine.dispose()
        row(
            f"{kind}: batch {size:>5} ({report.batches} requests)",
            f"{records / t.seconds:>10,.0f} records/s",
        )
        if size == 1000:
            record(
                f"flusher → local Polar server ({kind}, batch 1,000)",
                records / t.seconds,
                "records/s",
                minimum=10_000,
            )


def _queue() -> float:
    return REGISTRY.get_sample_value("orzbob_usage_meter_queue") or 0.0


def soak(kind: str, seconds: float, rate: int, batch_size: int, poll: float) -> None:
    """Write `rate` records/s in ticks of 100 ms while a flusher ships them (flushing until
    the queue is empty, then waiting `poll` s); sample the queue gauge once a second."""
    with scratch_database(kind) as db, _polar() as url:
        rt = make_runtime(db)
        ledger = _ledger(rt)
        flusher = _flusher(rt, url, batch_size)
        stop_writing, stop_flushing = threading.Event(), threading.Event()
        written = [0]
        sent = [0]

        def writer() -> None:
            tick, per_tick = 0.1, max(1, rate // 10)
            due = time.monotonic()
            while not stop_writing.is_set():
                ledger.write(rt, per_tick)
                written[0] += per_tick
                due += tick
                stop_writing.wait(max(0.0, due - time.monotonic()))

        def shipper() -> None:
            while not stop_flushing.is_set():
                report = flusher.flush()
                sent[0] += report.sent
                if report.batches == 0:
                    stop_flushing.wait(poll)

        threads = [threading.Thread(target=writer), threading.Thread(target=shipper)]
        samples: list[float] = []
        began = time.monotonic()
        for th in threads:
            th.start()
        try:
            next_sample = began + 1
            while time.monotonic() - began < seconds:
                time.sleep(max(0.0, next_sample - time.monotonic()))
                next_sample += 1
                flusher.update_gauges()  # a fresh count, not the last flush's leftover
                samples.append(_queue())
        finally:
            stop_writing.set()
            threads[0].join()
            elapsed = time.monotonic() - began
            drain = time.monotonic()
            while True:  # let the flusher catch up, then stop it
                flusher.update_gauges()
                if _queue() == 0 or time.monotonic() - drain > 120:
                    break
                time.sleep(0.2)
            stop_flushing.set()
            threads[1].join()
        arrived = _events(url)
        flusher.gateway.close()
        rt.engine.dispose()
    below = max(samples) < 1000 if samples else False
    row(f"{kind}: soak {elapsed:.0f} s, written", f"{written[0] / elapsed:>10,.0f} records/s")
    row(f"{kind}: soak shipped (all arrived: {arrived == written[0]})", f"{sent[0]:>10,} records")
    row(
        f"{kind}: queue min / avg / max ({len(samples)} samples)",
        f"{min(samples):,.0f} / {statistics.fmean(samples):,.0f} / {max(samples):,.0f}",
    )
    row(f"{kind}: queue stayed below 1,000", "yes" if below else "NO")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench polar")
    p.add_argument("--records", type=int, default=20_000, help="records per batch-size run")
    p.add_argument("--batch-sizes", default="100,500,1000,5000")
    # Five minutes keeps the full `make bench` under 20 (`--soak-seconds 600` for the ten
    # minutes the queue bar was set on, `--soak-seconds 3600` for a long one).
    p.add_argument("--soak-seconds", type=float, default=300.0, help="0 skips the soak")
    p.add_argument("--soak-rate", type=int, default=1000, help="records written per second")
    p.add_argument("--soak-batch-size", type=int, default=1000)
    p.add_argument("--flush-poll", type=float, default=0.5, help="flusher wait when idle (s)")
    p.add_argument("--soak-db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--null-records", type=int, default=50_000, help="records for the null sink")
    p.add_argument("--quick", action="store_true")
    a, _ = p.parse_known_args(argv)
    if a.quick:
        a.null_records = 20_000
        a.records, a.batch_sizes, a.soak_seconds = 5_000, "1000", 0.0
    sizes = [int(x) for x in a.batch_sizes.split(",") if x]
    print("polar: records shipped to a null sink (accepts and drops) over HTTP")
    bench_null_sink("sqlite", a.null_records, 1000)
    if postgres_available():
        bench_null_sink("postgresql", a.null_records, 1000)
    print("polar: records shipped to the local Polar server over HTTP, by batch size")
    bench_batches("sqlite", a.records, sizes)
    if postgres_available():
        bench_batches("postgresql", a.records, sizes)
    else:
        row("postgresql", "skipped: PostgreSQL unreachable")
    if a.soak_seconds > 0:
        print(f"polar: soak at {a.soak_rate:,} records/s for {a.soak_seconds:.0f} s")
        if a.soak_db == "postgresql" and not postgres_available():
            row("postgresql soak", "skipped: PostgreSQL unreachable")
            return
        soak(a.soak_db, a.soak_seconds, a.soak_rate, a.soak_batch_size, a.flush_poll)
