"""lab/receiver.py on its own (no Ceph needed): HTTP and SMTP messages end up in received.jsonl."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import lab.receiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    (tmp_path / "run").mkdir()
    http_port, smtp_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, lab.receiver.__file__, "--dir", str(tmp_path),
                             "--http-port", str(http_port), "--smtp-port", str(smtp_port)])
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(f"{url}/health", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the receiver did not start")
            time.sleep(0.1)
    yield url, smtp_port, tmp_path
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=1)
    assert not (tmp_path / "run" / "receiver.pid").exists()


def test_posts_on_any_path_are_recorded_and_listed(receiver: tuple[str, int, Path]) -> None:
    url, _, root = receiver
    first = requests.post(f"{url}/hooks/dc", json={"host": "node3"}, timeout=5).json()
    second = requests.post(f"{url}/anything/else", data="not json", timeout=5).json()
    assert (first["id"], second["id"]) == (1, 2)
    listed = requests.get(f"{url}/received", timeout=5).json()
    assert [(m["path"], m["body"]) for m in listed] == [("/hooks/dc", {"host": "node3"}),
                                                        ("/anything/else", "not json")]
    on_disk = [json.loads(line) for line in (root / "received.jsonl").read_text().splitlines()]
    assert on_disk == listed


def test_delete_forgets_messages(receiver: tuple[str, int, Path]) -> None:
    url, _, root = receiver
    requests.post(f"{url}/x", json={}, timeout=5)
    assert requests.delete(f"{url}/received", timeout=5).status_code == 200
    assert requests.get(f"{url}/received", timeout=5).json() == []
    assert (root / "received.jsonl").read_text() == ""


def test_smtp_mails_are_recorded_with_dot_unstuffing(receiver: tuple[str, int, Path]) -> None:
    url, smtp_port, _ = receiver
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com", "c@example.com"],
                      "Subject: hello\r\n\r\nline one\r\n.dot line\r\n")
        smtp.helo("client")
        smtp.sendmail("d@example.com", ["e@example.com"], "Subject: second\r\n\r\nbody\r\n")
    mails = requests.get(f"{url}/received", timeout=5).json()
    assert [(m["kind"], m["subject"], m["rcpt_to"]) for m in mails] == [
        ("smtp", "hello", ["b@example.com", "c@example.com"]), ("smtp", "second", ["e@example.com"])]
    assert mails[0]["body"].splitlines() == ["line one", ".dot line"]


def test_smtp_rejects_data_before_recipients(receiver: tuple[str, int, Path]) -> None:
    _, smtp_port, _ = receiver
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.docmd("DATA")[0] == 503
        assert smtp.docmd("VRFY", "x")[0] == 502
