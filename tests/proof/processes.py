"""Real processes for the crash proofs: `orz server` and `orz polar serve-local` on free
ports, a scratch PostgreSQL database per run, and kill -9."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_database(admin_url: str, name: str | None = None) -> Iterator[str]:
    """A new empty PostgreSQL database on the server of `admin_url` (dropped afterwards);
    yields its SQLAlchemy URL. A given `name` is dropped first if a crashed run left it."""
    name = name or f"orzbob_proof_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_url(admin_url).set(drivername="postgresql", database="postgres")
    plain = admin.render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_backends(db_url: str) -> int:
    """Cut every connection the service holds to the database (pg_terminate_backend)."""
    url = make_url(db_url)
    plain = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        ).fetchall()
    return len(rows)


class Proc:
    """One `orz …` process that can be killed with SIGKILL and started again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.killed: list[Path] = []  # the logs of the runs that ended in kill -9

    @property
    def log(self) -> Path:
        return self.logs / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orzbob.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.killed.append(self.log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait_healthy(self, url: str, path: str = "/healthz") -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-4000:]}")

    def all_logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{self.name}-*.log"))
        )


_SENDING = re.compile(r"alert \S+: sending (<[^>]+>)")
_SENT = re.compile(r"alert \S+: (<[^>]+>) recorded as sent")


def sends_in_flight(killed_logs: Iterable[Path]) -> Counter[str]:
    """Per Message-ID, how many killed runs died while sending it: the alert sender logs
    `sending <Message-ID>` before it talks SMTP and `<Message-ID> recorded as sent` once the
    outcome is committed, one message at a time. A log whose last send has no such record
    was killed between the two, perhaps after the server had accepted the message: the one
    window where a resend is expected."""
    out: Counter[str] = Counter()
    for log in killed_logs:
        last: str | None = None
        for line in log.read_text(errors="replace").splitlines():
            if m := _SENDING.search(line):
                last = m.group(1)
            elif (m := _SENT.search(line)) and m.group(1) == last:
                last = None
        if last is not None:
            out[last] += 1
    return out
