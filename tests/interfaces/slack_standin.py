"""A local HTTP server standing in for Slack's Web API (chat.postMessage, chat.update) and for the
response_url endpoints. It records every call before answering, as Slack's documented formats."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.workers import wait_for


@dataclass(frozen=True)
class Call:
    path: str
    auth: str
    body: dict[str, Any]
    reply: dict[str, Any]

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.ts = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, n: int = 1) -> str:
        return f"{self.url}/commands/T0TEAM/{n}/secret"

    def start(self) -> SlackStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with standin.lock:
                    ts = f"1700000000.{next(standin.ts):06d}"
                reply: dict[str, Any] = {}
                if self.path.startswith("/api/"):
                    if not self.headers.get("Authorization", "").startswith("Bearer xoxb-"):
                        reply = {"ok": False, "error": "not_authed"}
                    elif self.path.endswith("chat.update"):
                        reply = {"ok": True, "channel": body.get("channel"), "ts": body.get("ts"), "text": body.get("text")}
                    else:
                        reply = {"ok": True, "channel": body.get("channel"), "ts": ts, "message": {"text": body.get("text")}}
                    data = json.dumps(reply).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    data = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                with standin.lock:
                    standin.calls.append(Call(self.path, self.headers.get("Authorization", ""), body, reply))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    # ---- queries ----
    def of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def posts_to(self, prefix: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path.startswith(prefix)]

    def responses(self) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path.startswith("/commands/")]

    def messages_about(self, run_id: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path.startswith("/api/") and run_id in json.dumps(c.body)]

    def wait_response(self, contains: str, timeout: float = 30) -> Call:
        return wait_for(lambda: next((c for c in self.responses() if contains in c.body.get("text", "")), None),  # type: ignore[no-any-return]
                        timeout=timeout, what=f"a response containing {contains!r}; got {[c.body for c in self.responses()]}")

    def wait_message(self, run_id: str, contains: str, timeout: float = 60) -> Call:
        return wait_for(lambda: next((c for c in reversed(self.messages_about(run_id))
                                      if contains in c.body.get("text", "")), None),  # type: ignore[no-any-return]
                        timeout=timeout, what=f"a message about {run_id} containing {contains!r}")
