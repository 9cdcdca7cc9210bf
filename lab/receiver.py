"""Stand-in for the datacenter technicians: records every webhook POST and every SMTP mail.

Each message becomes one JSON line in ``<labdir>/received.jsonl``. ``GET /received`` returns them all
as a JSON list, ``DELETE /received`` forgets them. Any other POST/PUT (webhook, ticket API, chat
webhook, Alertmanager) is recorded and answered with ``{"ok": true, "id": N}``.
Standard library only, so it can run under any Python 3.11.

    python receiver.py --dir LABDIR --http-port P --smtp-port Q
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 16 * 1024 * 1024


class Journal:
    """The received messages, in memory and as JSON lines on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        if path.exists():
            self.messages = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def record(self, message: dict[str, Any]) -> int:
        with self.lock:
            message = {"seq": len(self.messages) + 1, "time": time.time(), **message}
            self.messages.append(message)
            with self.path.open("a") as out:
                out.write(json.dumps(message, sort_keys=True) + "\n")
            return int(message["seq"])

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def clear(self) -> None:
        with self.lock:
            self.messages = []
            self.path.write_text("")


def make_http_handler(journal: Journal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "lab-receiver/1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def reply(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?")[0].rstrip("/") == "/received":
                self.reply(200, journal.all())
            elif self.path == "/health":
                self.reply(200, {"ok": True})
            else:
                self.reply(404, {"error": f"nothing at {self.path}; GET /received lists the messages"})

        def do_DELETE(self) -> None:
            if self.path.rstrip("/") == "/received":
                journal.clear()
                self.reply(200, {"ok": True})
            else:
                self.reply(404, {"error": f"nothing to delete at {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.reply(413, {"error": "body too large"})
                return
            raw = self.rfile.read(length).decode("utf-8", errors="replace")
            try:
                body: object = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw
            seq = journal.record({
                "kind": "http",
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            })
            self.reply(200, {"ok": True, "id": seq})

        do_PUT = do_POST

    return Handler


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for a client that sends one or more plain mails per session."""

    journal: Journal
    hostname = "lab-receiver"

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def readline(self) -> str | None:
        raw = self.rfile.readline(65536)
        if not raw:
            return None
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def handle(self) -> None:
        self.send(f"220 {self.hostname} ESMTP lab receiver")
        mail_from: str | None = None
        rcpt_to: list[str] = []
        while (line := self.readline()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "HELO":
                self.send(f"250 {self.hostname}")
            elif verb == "EHLO":
                self.send(f"250-{self.hostname}")
                self.send("250-8BITMIME")
                self.send("250 SIZE 16777216")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                mail_from, rcpt_to = address(arg[5:]), []
                self.send("250 OK")
            elif verb == "RCPT" and arg.upper().startswith("TO:"):
                if mail_from is None:
                    self.send("503 MAIL first")
                else:
                    rcpt_to.append(address(arg[3:]))
                    self.send("250 OK")
            elif verb == "DATA":
                if not rcpt_to or mail_from is None:
                    self.send("503 RCPT first")
                    continue
                self.send("354 End data with <CR><LF>.<CR><LF>")
                data = self.read_data()
                if data is None:
                    return
                self.store(mail_from, rcpt_to, data)
                mail_from, rcpt_to = None, []
                self.send("250 OK queued")
            elif verb == "RSET":
                mail_from, rcpt_to = None, []
                self.send("250 OK")
            elif verb == "NOOP":
                self.send("250 OK")
            elif verb == "QUIT":
                self.send("221 Bye")
                return
            else:
                self.send("502 Command not implemented")

    def read_data(self) -> str | None:
        lines: list[str] = []
        while (line := self.readline()) is not None:
            if line == ".":
                return "\r\n".join(lines) + "\r\n"
            lines.append(line[1:] if line.startswith(".") else line)
        return None

    def store(self, mail_from: str, rcpt_to: list[str], data: str) -> None:
        message = email.message_from_string(data, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        self.journal.record({
            "kind": "smtp",
            "mail_from": mail_from,
            "rcpt_to": rcpt_to,
            "subject": str(message.get("Subject", "")),
            "headers": {k.lower(): str(v) for k, v in message.items()},
            "body": body.get_content() if body is not None else "",
            "data": data,
        })


def address(arg: str) -> str:
    arg = arg.strip().split(" ")[0]
    return arg[1:-1] if arg.startswith("<") and arg.endswith(">") else arg


class SMTPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(lab_dir: Path, http_port: int, smtp_port: int, host: str = "127.0.0.1") -> None:
    journal = Journal(lab_dir / "received.jsonl")
    http = ThreadingHTTPServer((host, http_port), make_http_handler(journal))
    http.daemon_threads = True
    handler = type("BoundSMTPHandler", (SMTPHandler,), {"journal": journal})
    smtp = SMTPServer((host, smtp_port), handler)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()

    def shutdown(signum: int, frame: object) -> None:
        threading.Thread(target=http.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    pid_file = lab_dir / "run" / "receiver.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        http.serve_forever()
    finally:
        smtp.shutdown()
        smtp.server_close()
        http.server_close()
        pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab receiver: records webhooks and mails")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--http-port", required=True, type=int)
    parser.add_argument("--smtp-port", required=True, type=int)
    args = parser.parse_args(argv)
    serve(args.dir, args.http_port, args.smtp_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
