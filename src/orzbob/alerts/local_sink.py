"""A local SMTP sink for development and tests (aiosmtpd): it accepts every message, keeps it
(in memory and, for `orz dev`, in a Maildir), and shows it on a small web page. It can also
misbehave on purpose (refuse recipients, answer 4xx/5xx, stall) so the sender's handling of
real servers is tested against real SMTP. Never started by `orz server`."""

from __future__ import annotations

import asyncio
import html
import logging
import mailbox
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, PlainTextResponse


@dataclass(frozen=True)
class Received:
    key: str
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    received_at: datetime

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        return "" if body is None else str(body.get_content())


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


class SinkHandler:
    """aiosmtpd handler. The fault knobs are plain attributes, set from any thread."""

    def __init__(self, maildir: Path | None = None) -> None:
        if maildir:
            maildir.parent.mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(maildir, create=True) if maildir else None
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.rcpt_replies: dict[str, str] = {}  # address -> reply, e.g. "550 5.1.1 unknown"
        self.mail_reply: str | None = None  # e.g. "451 4.3.0 try again later"
        self.data_reply: str | None = None
        self.data_delay: float = 0.0  # seconds to stall after storing, before replying 250

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        raw = envelope.original_content or b""
        key = self.store(raw, str(envelope.mail_from), list(envelope.rcpt_tos))
        if self.data_delay:
            # Stored but not yet acknowledged: the sender may die waiting (crash mid-send).
            await asyncio.sleep(self.data_delay)
        return f"250 2.0.0 Ok: queued as {key}"

    def store(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> str:
        with self._lock:
            # (An empty Maildir is falsy: it has a length.)
            key = self.maildir.add(raw) if self.maildir is not None else str(len(self.messages) + 1)
            self.messages.append(Received(key, mail_from, rcpt_tos, parse(raw), datetime.now(UTC)))
            return key

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)


class _BoundController(Controller):
    """aiosmtpd's threaded controller on an already bound socket, so port 0 works and the
    port is known (and ours) before the server starts."""

    def __init__(self, handler: SinkHandler, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SinkServer:
    """The sink on 127.0.0.1:`port` (0 = any free port). `stop()` then `start()` brings it
    back on the same port, as a mail server coming back after an outage."""

    def __init__(
        self,
        handler: SinkHandler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **smtp_kwargs: Any,
    ) -> None:
        self.handler = handler or SinkHandler()
        self.host, self.port = host, port
        self.smtp_kwargs = {"auth_require_tls": False, **smtp_kwargs}
        self._controller: _BoundController | None = None

    def start(self) -> SinkServer:
        # aiosmtpd logs every SMTP command at INFO: the sink's web page shows what arrived.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen()
        self.port = sock.getsockname()[1]
        self._controller = _BoundController(self.handler, sock, **self.smtp_kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SinkServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- the web page ----------------------------------------------------------------------------
def viewer_app(handler: SinkHandler) -> FastAPI:
    """Lists the kept messages newest first; each opens as HTML, text or raw source."""
    app = FastAPI(title="Orzbob local mail", openapi_url=None, docs_url=None, redoc_url=None)

    def find(key: str) -> Received:
        for r in handler.received():
            if r.key == key:
                return r
        raise HTTPException(404, "no such message")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        rows = "".join(
            f"<tr><td>{r.received_at:%Y-%m-%d %H:%M:%S}</td>"
            f"<td>{html.escape(', '.join(r.rcpt_tos))}</td>"
            f"<td>{html.escape(str(r.message['Subject'] or ''))}</td>"
            f'<td><a href="/messages/{r.key}/html">HTML</a> · '
            f'<a href="/messages/{r.key}/text">text</a> · '
            f'<a href="/messages/{r.key}/raw">source</a></td></tr>'
            for r in reversed(handler.received())
        )
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Local mail</title></head>"
            "<body style='font-family: sans-serif'><h1>Mail sent by the local service</h1>"
            "<p>Nothing here leaves this machine.</p><table cellpadding='4'>"
            "<tr><th>received (UTC)</th><th>to</th><th>subject</th><th></th></tr>"
            f"{rows}</table></body></html>"
        )

    @app.get("/api/messages")
    def list_json() -> list[dict[str, Any]]:
        return [
            {
                "key": r.key,
                "received_at": r.received_at.isoformat(),
                "from": r.mail_from,
                "to": r.rcpt_tos,
                "subject": str(r.message["Subject"] or ""),
                "message_id": str(r.message["Message-ID"] or ""),
            }
            for r in handler.received()
        ]

    @app.get("/messages/{key}/html", response_class=HTMLResponse)
    def as_html(key: str) -> str:
        return find(key).part("html")

    @app.get("/messages/{key}/text", response_class=PlainTextResponse)
    def as_text(key: str) -> str:
        return find(key).part("plain")

    @app.get("/messages/{key}/raw", response_class=PlainTextResponse)
    def as_raw(key: str) -> str:
        return find(key).message.as_string()

    return app


def read_maildir(path: Path) -> list[tuple[str, EmailMessage]]:
    """Messages the sink kept in `path`, oldest first (for `orz dev mail`)."""
    if not path.exists():
        return []
    box = mailbox.Maildir(path, create=False)
    items = [(key, parse(box.get_bytes(key))) for key in box.iterkeys()]
    return sorted(items, key=lambda kv: _date(kv[1]))


def _date(msg: EmailMessage) -> datetime:
    value = msg["Date"]
    dt = getattr(value, "datetime", None) if value is not None else None
    return dt if isinstance(dt, datetime) else datetime.min.replace(tzinfo=UTC)
