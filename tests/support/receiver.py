"""Real HTTP and SMTP servers on 127.0.0.1 that record what they receive, for tests of notifications.

A request or mail is recorded before it is answered, so once the client has its answer the record
is there: tests need not wait.
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

POLL_INTERVAL = 0.05
"""How often the servers check for shutdown; the default 0.5s slows every test's teardown."""


def _thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    return threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL,), name=name, daemon=True)


@dataclass(frozen=True)
class HttpRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"
    times: int | None = None
    """How many requests this reply answers; None: all of them."""


class HttpReceiver:
    """Records every request; answers ``200 ok`` unless :meth:`respond` says otherwise for a path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[HttpRecord] = []
        self._replies: dict[str, list[Reply]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self))
        self._server.daemon_threads = True
        self._thread = _thread(self._server, "http-receiver")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def respond(self, path: str, status: int = 200, *, json_body: Any = None, text: str = "ok",
                times: int | None = None) -> None:
        """Answer requests to ``path`` with this status and body (``times`` requests, or all)."""
        if json_body is not None:
            reply = Reply(status, json.dumps(json_body).encode(), "application/json", times)
        else:
            reply = Reply(status, text.encode(), "text/plain", times)
        with self._lock:
            queue = self._replies.setdefault(path, [])
            if times is None:
                queue[:] = [r for r in queue if r.times is not None]
            queue.append(reply)

    def requests(self, path: str | None = None, method: str | None = None) -> list[HttpRecord]:
        with self._lock:
            return [
                r for r in self._records
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def _record(self, record: HttpRecord) -> Reply:
        with self._lock:
            self._records.append(record)
            queue = self._replies.get(record.path, [])
            for reply in queue:
                if reply.times is not None:
                    reply.times -= 1
                    if reply.times <= 0:
                        queue.remove(reply)
                    return reply
            return next((r for r in queue if r.times is None), Reply())


def _http_handler(owner: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            reply = owner._record(HttpRecord(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            ))
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())


@dataclass
class _SmtpState:
    mails: list[Mail] = field(default_factory=list)
    reject: list[tuple[int, str]] = field(default_factory=list)


class SmtpReceiver:
    """A minimal SMTP server (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) recording each mail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _SmtpState()
        self._server = _SmtpServer(("127.0.0.1", 0), _SmtpHandler)
        self._server.owner = self
        self._thread = _thread(self._server, "smtp-receiver")

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self._state.mails)

    def reject_next(self, code: int = 451, text: str = "try again later") -> None:
        """Refuse the next mail at the end of DATA with ``code``."""
        with self._lock:
            self._state.reject.append((code, text))

    def _deliver(self, mail: Mail) -> tuple[int, str]:
        with self._lock:
            if self._state.reject:
                return self._state.reject.pop(0)
            self._state.mails.append(mail)
            return 250, "queued"


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: SmtpReceiver


class _SmtpHandler(socketserver.StreamRequestHandler):
    server: _SmtpServer

    def _reply(self, code: int, text: str) -> None:
        self.wfile.write(f"{code} {text}\r\n".encode())
        self.wfile.flush()

    def handle(self) -> None:
        self._reply(220, "localhost test SMTP ready")
        sender: str | None = None
        recipients: list[str] = []
        while line := self.rfile.readline(65536):
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            upper = command.upper()
            if upper.startswith(("EHLO", "HELO")):
                self._reply(250, "localhost")
            elif upper.startswith("MAIL FROM:"):
                sender, recipients = _address(command[10:]), []
                self._reply(250, "OK")
            elif upper.startswith("RCPT TO:"):
                if sender is None:
                    self._reply(503, "MAIL first")
                    continue
                recipients.append(_address(command[8:]))
                self._reply(250, "OK")
            elif upper == "DATA":
                if sender is None or not recipients:
                    self._reply(503, "MAIL and RCPT first")
                    continue
                self._reply(354, "end data with <CR><LF>.<CR><LF>")
                self._reply(*self.server.owner._deliver(Mail(sender, recipients, self._read_data())))
                sender, recipients = None, []
            elif upper == "RSET":
                sender, recipients = None, []
                self._reply(250, "OK")
            elif upper == "NOOP":
                self._reply(250, "OK")
            elif upper == "QUIT":
                self._reply(221, "bye")
                return
            else:
                self._reply(502, "command not implemented")

    def _read_data(self) -> bytes:
        lines: list[bytes] = []
        while (line := self.rfile.readline(1 << 20)) and line not in (b".\r\n", b".\n"):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)


def _address(text: str) -> str:
    return text.strip().split(" ")[0].strip("<>")


@dataclass
class Receiver:
    http: HttpReceiver
    smtp: SmtpReceiver


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """An HTTP and an SMTP receiver, both on 127.0.0.1 and stopped after the ``with`` block."""
    http, smtp = HttpReceiver(), SmtpReceiver()
    http.start()
    try:
        smtp.start()
        try:
            yield Receiver(http, smtp)
        finally:
            smtp.stop()
    finally:
        http.stop()
