"""python -m lab up|down|status|env|demo [--dir DIR]"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from lab.core import Lab
from lab.layout import LabError, default_dir


def print_status(lab: Lab, as_json: bool) -> None:
    status = lab.status()
    if as_json:
        print(json.dumps(status, indent=2))
        return
    print(f"lab {status['dir']} ({status['objectstore']})  health: {status['health'] or 'unreachable'}")
    print(f"{'daemon':<16} {'pid':>8} {'rss MiB':>8}")
    for d in status["daemons"]:
        pid = d["pid"] if d["pid"] else "down"
        print(f"{d['name']:<16} {pid:>8} {d['rss_mib']:>8}")
    print(f"{'total':<16} {'':>8} {status['rss_mib_total']:>8}")
    ports = status["ports"]
    ssh = " ".join(f"{h}={p}" for h, p in ports["ssh"].items())
    mons = " ".join(f"{m}={v2}/{v1}" for m, (v2, v1) in ports["mon"].items())
    print(f"ports: mon v2/v1 {mons}  alertmanager {ports['alertmanager']}  "
          f"receiver http {ports['receiver_http']} smtp {ports['receiver_smtp']}  ssh {ssh}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "demo"])
    parser.add_argument("--dir", default=str(default_dir()),
                        help="lab directory (default: $HOTSWAP_LAB_DIR or /tmp/hotswap-lab)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds 'up' may take")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--objectstore", choices=["memstore", "bluestore"], default="memstore",
                        help="up: OSD backend (bluestore on sparse files keeps data across OSD restarts)")
    parser.add_argument("--node", default="node3", help="demo: the host to replace")
    parser.add_argument("--reason", default="demo: PSU failure", help="demo: why it is replaced")
    parser.add_argument("--verbose", action="store_true", help="demo: also show the remote commands' output")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lab.demo import main as demo

        return demo(args.dir, args.node, args.reason, verbose=args.verbose)
    lab = Lab(args.dir)
    try:
        if args.command == "up":
            started = time.monotonic()
            if lab.up(timeout=args.timeout, objectstore=args.objectstore):
                print(f"lab up in {time.monotonic() - started:.1f} s; inventory: {lab.inventory_path}")
            else:
                print(f"lab already up in {lab.root}; inventory: {lab.inventory_path}")
            print_status(lab, as_json=False)
        elif args.command == "down":
            started = time.monotonic()
            lab.down()
            print(f"lab down in {time.monotonic() - started:.1f} s")
        elif args.command == "status":
            print_status(lab, args.json)
        else:
            for key, value in lab.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
