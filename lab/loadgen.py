#!/usr/bin/python3
"""lab-client-load: steady small-object client I/O against the lab through librados, one JSON line a second.

Installed as ``<labdir>/bin/lab-client-load`` and run by :mod:`lab.clientload` (the Python API) under
``/usr/bin/python3``: Debian's ``python3-rados`` imports only there. Standard library and ``rados`` only.

    lab-client-load --conf CEPH_CONF --out FILE [--pool lab --pool lab-ec] [--rate 10] [--size 4096]

Per pool, one thread writes a ``--size`` object (``write_full``) and reads it back (checking the bytes),
``--rate`` times a second (so 2 x rate ops/s per pool), cycling over ``--objects`` object names. A
writer thread appends to FILE: first ``{"ready": ...}`` once connected, then every second
``{"t": epoch, "span_s": seconds covered (1 but for the last), "ops": N, "errors": N, "p50_ms", "p99_ms", "max_ms", "lat_ms": [every op's latency],
"inflight_ms": age of the oldest op still running, "pools": {pool: {"ops", "errors", "p99_ms"}},
"error_messages": [...]}``, and ``{"end": epoch}`` after SIGTERM/SIGINT. A blocked op (a PG peering
or below min_size) shows as ``inflight_ms`` growing before it completes; an op that fails (or times out
after ``--op-timeout`` s) counts as an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any

MAX_MESSAGES = 5


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class Recorder:
    """Completed ops of the current second, and the ops in flight."""

    def __init__(self, pools: list[str]) -> None:
        self.lock = threading.Lock()
        self.pools = pools
        self._reset()
        self.inflight: dict[int, float] = {}
        self.since = time.monotonic()

    def _reset(self) -> None:
        self.lat: dict[str, list[float]] = {p: [] for p in self.pools}
        self.errors: dict[str, int] = dict.fromkeys(self.pools, 0)
        self.messages: list[str] = []

    def begin(self, key: int) -> float:
        now = time.monotonic()
        with self.lock:
            self.inflight[key] = now
        return now

    def done(self, key: int, pool: str, started: float, error: str | None) -> None:
        ms = (time.monotonic() - started) * 1000
        with self.lock:
            self.inflight.pop(key, None)
            self.lat[pool].append(ms)
            if error is not None:
                self.errors[pool] += 1
                if len(self.messages) < MAX_MESSAGES:
                    self.messages.append(f"{pool}: {error}")

    def take(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            lat, errors, messages = self.lat, self.errors, self.messages
            oldest = min(self.inflight.values(), default=now)
            self._reset()
            span, self.since = now - self.since, now
        every = sorted(v for values in lat.values() for v in values)
        return {
            "t": round(time.time(), 3),
            "span_s": round(span, 3),
            "ops": len(every),
            "errors": sum(errors.values()),
            "p50_ms": round(percentile(every, 0.50), 2),
            "p99_ms": round(percentile(every, 0.99), 2),
            "max_ms": round(every[-1], 2) if every else 0.0,
            "lat_ms": [round(v, 2) for v in every],
            "inflight_ms": round((now - oldest) * 1000, 1),
            "pools": {p: {"ops": len(lat[p]), "errors": errors[p], "p99_ms": round(percentile(sorted(lat[p]), 0.99), 2)}
                      for p in self.pools},
            "error_messages": messages,
        }


def worker(ioctx: Any, pool: str, index: int, args: argparse.Namespace, rec: Recorder,
           stop: threading.Event, rados_error: type[Exception]) -> None:
    payload_base = os.urandom(args.size)
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    n = 0
    try:
        while not stop.is_set():
            name = f"client-load-{os.getpid()}-{n % args.objects:04d}"
            payload = n.to_bytes(8, "little") + payload_base[8:]
            key = index * 2
            started = rec.begin(key)
            error = None
            try:
                ioctx.write_full(name, payload)
            except rados_error as exc:
                error = f"write {name}: {type(exc).__name__}: {exc}"
            rec.done(key, pool, started, error)
            if error is None:
                started = rec.begin(key + 1)
                try:
                    data = ioctx.read(name, args.size)
                    error = None if data == payload else f"read {name}: {len(data)} bytes, not what was written"
                except rados_error as exc:
                    error = f"read {name}: {type(exc).__name__}: {exc}"
                rec.done(key + 1, pool, started, error)
            n += 1
            next_at = max(next_at + interval, time.monotonic())
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        ioctx.close()


def write_line(out: Any, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":")) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab-client-load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pool", action="append", dest="pools")
    parser.add_argument("--rate", type=float, default=10.0, help="write+read pairs per second per pool")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--objects", type=int, default=64)
    parser.add_argument("--op-timeout", type=int, default=30)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    pools = args.pools or ["lab"]
    import rados  # type: ignore[import-not-found]  # only under /usr/bin/python3 (python3-rados)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rec = Recorder(pools)
    conf = {"rados_osd_op_timeout": str(args.op_timeout), "rados_mon_op_timeout": str(args.op_timeout),
            "client_mount_timeout": "30"}
    with open(args.out, "a", encoding="utf-8") as out, rados.Rados(conffile=args.conf, conf=conf) as cluster:
        try:
            ioctxs = [cluster.open_ioctx(pool) for pool in pools]
        except rados.Error as exc:
            print(f"lab-client-load: cannot open pools {', '.join(pools)}: {exc}", file=sys.stderr)
            return 1
        threads = [threading.Thread(target=worker, args=(ioctx, pool, i, args, rec, stop, rados.Error),
                                    daemon=True)
                   for i, (pool, ioctx) in enumerate(zip(pools, ioctxs, strict=True))]
        for thread in threads:
            thread.start()
        write_line(out, {"ready": round(time.time(), 3), "pid": os.getpid(), "pools": pools, "rate": args.rate,
                         "size": args.size})
        tick = time.monotonic()
        while not stop.is_set():
            tick += 1.0
            stop.wait(max(0.0, tick - time.monotonic()))
            write_line(out, rec.take())
        for thread in threads:
            thread.join(args.op_timeout + 5)
        write_line(out, rec.take())
        write_line(out, {"end": round(time.time(), 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
