"""HttpToolkit against a real http.server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from actions.http import HttpResult, HttpToolkit
from engine.errors import ActionError, ConnectionFailed
from tests.support.sshd import closed_port


class ListLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.records.append(("info", message))

    def warning(self, message: str) -> None:
        self.records.append(("warning", message))

    def error(self, message: str) -> None:
        self.records.append(("error", message))

    def text(self) -> str:
        return "\n".join(m for _, m in self.records)


class Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, status: int, body: str, content_type: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                server.requests.append(
                    {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)}
                )
                path = self.path.split("?")[0]
                if path == "/ok":
                    self._reply(200, json.dumps({"ok": True}))
                elif path == "/text":
                    self._reply(200, "plain words", "text/plain")
                elif path == "/echo":
                    self._reply(201, json.dumps({"body": json.loads(body or "null"), "path": self.path}))
                elif path == "/slow":
                    server.release.wait(30)
                    self._reply(200, "{}")
                elif path == "/fail":
                    self._reply(500, f"internal error while handling {self.path}: " + "x" * 1000)
                else:
                    self._reply(404, "no such thing")

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()


class Planned:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, kind: str, **details: Any) -> None:
        self.entries.append({"kind": kind, **details})


def make(
    dry_run: bool = False, secrets: tuple[str, ...] = (), timeout: float = 5
) -> tuple[HttpToolkit, ListLog, Planned]:
    log, planned = ListLog(), Planned()
    return (
        HttpToolkit(log=log, dry_run=dry_run, would=planned, secrets=secrets, timeout=timeout),
        log,
        planned,
    )


def test_get_returns_status_headers_body_and_json(server: Server) -> None:
    http, log, _ = make()
    result = http.request("get", f"{server.url}/ok")
    assert (result.method, result.status, result.ok, result.dry_run) == ("GET", 200, True, False)
    assert result.headers["Content-Type"] == "application/json"
    assert result.json() == {"ok": True}
    assert ("info", f"GET {server.url}/ok -> 200") in log.records


def test_post_sends_json_params_and_headers(server: Server) -> None:
    http, _, _ = make()
    result = http.request(
        "POST", f"{server.url}/echo", json={"a": [1, 2]}, params={"q": "x y"}, headers={"X-Run": "r1"}
    )
    assert result.status == 201
    assert result.json() == {"body": {"a": [1, 2]}, "path": "/echo?q=x+y"}
    assert server.requests[0]["headers"]["X-Run"] == "r1"


def test_non_2xx_raises_with_status_and_body_excerpt(server: Server) -> None:
    http, _, _ = make()
    with pytest.raises(ActionError, match=r"GET .*/missing returned HTTP 404: 'no such thing'") as info:
        http.request("GET", f"{server.url}/missing")
    assert not isinstance(info.value, ConnectionFailed)
    with pytest.raises(ActionError, match="returned HTTP 500") as failed:
        http.request("DELETE", f"{server.url}/fail")
    assert len(str(failed.value)) < 500


def test_ok_statuses_are_returned(server: Server) -> None:
    http, _, _ = make()
    result = http.request("GET", f"{server.url}/missing", ok=(404,))
    assert (result.status, result.ok, result.body) == (404, False, "no such thing")


def test_invalid_json_body(server: Server) -> None:
    http, _, _ = make()
    with pytest.raises(ActionError, match=r"not valid JSON.*plain words"):
        http.request("GET", f"{server.url}/text").json()


def test_unreachable_server_is_connection_failed() -> None:
    http, _, _ = make()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        http.request("GET", f"http://127.0.0.1:{closed_port()}/ok")


def test_timeout_is_connection_failed(server: Server) -> None:
    http, _, _ = make(timeout=0.3)
    with pytest.raises(ConnectionFailed, match="no answer in time"):
        http.request("GET", f"{server.url}/slow")


def test_invalid_url_is_an_action_error() -> None:
    http, _, _ = make()
    with pytest.raises(ActionError, match="invalid URL"):
        http.request("GET", "not a url")


def test_dry_run_records_mutating_requests_without_sending(server: Server) -> None:
    http, _, planned = make(dry_run=True)
    result = http.request("POST", f"{server.url}/echo", json={"b": 1, "a": 2}, params={"q": "1"})
    assert result == HttpResult("POST", f"{server.url}/echo", 0, {}, "", dry_run=True)
    assert result.json() is None
    http.request("DELETE", f"{server.url}/ok")
    http.request("GET", f"{server.url}/ok", mutating=True)
    assert server.requests == []
    assert planned.entries == [
        {"kind": "http", "method": "POST", "url": f"{server.url}/echo?q=1", "body": '{"a": 2, "b": 1}'},
        {"kind": "http", "method": "DELETE", "url": f"{server.url}/ok", "body": None},
        {"kind": "http", "method": "GET", "url": f"{server.url}/ok", "body": None},
    ]


def test_dry_run_still_sends_read_only_requests(server: Server) -> None:
    http, _, planned = make(dry_run=True)
    assert http.request("GET", f"{server.url}/ok").json() == {"ok": True}
    assert http.request("HEAD", f"{server.url}/ok").status == 200
    assert http.request("POST", f"{server.url}/echo", json={"query": 1}, mutating=False).status == 201
    assert [r["method"] for r in server.requests] == ["GET", "HEAD", "POST"]
    assert planned.entries == []


def test_secrets_are_redacted(server: Server) -> None:
    secret = "t0p-s3cret"
    http, log, _ = make(secrets=(secret,))
    http.request("GET", f"{server.url}/ok", params={"token": secret})
    with pytest.raises(ActionError) as info:
        http.request("GET", f"{server.url}/fail?token={secret}")
    assert secret not in str(info.value)
    assert "token=***" in str(info.value)
    with pytest.raises(ConnectionFailed) as refused:
        http.request("GET", f"http://127.0.0.1:{closed_port()}/x?token={secret}")
    assert secret not in str(refused.value)
    assert secret not in log.text()
    assert "token=***" in log.text()

    dry, _, planned = make(dry_run=True, secrets=(secret,))
    dry.request("POST", f"{server.url}/echo?token={secret}", json={"password": secret})
    assert planned.entries == [
        {
            "kind": "http",
            "method": "POST",
            "url": f"{server.url}/echo?token=***",
            "body": '{"password": "***"}',
        }
    ]
