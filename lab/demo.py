"""The demo: replace a node of the real Ceph lab with runbooks/replace-node.yaml on the embedded engine.

``python -m lab demo [--dir DIR] [--node node3]``: brings the lab up (reused when already up), then
runs ``hotswap run runbooks/replace-node.yaml ... --follow`` with ``HOTSWAP_INVENTORY`` pointing at the
lab's inventory and ``HOTSWAP_HOME`` at a demo state directory (no ``HOTSWAP_REDIS_URL``: the embedded
Redis and worker start on their own). When the run stops at the swap gate, it plays the datacenter
technician: a few seconds later it approves the gate as ``dc-tech`` with ``hotswap approve``. At the
end it prints ``hotswap status`` and leaves the lab up. The remote commands' raw output (ceph JSON) is
left out of the live log unless ``--verbose``; ``hotswap logs RUN`` has all of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lab.core import Lab
from lab.layout import LabError

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "runbooks/replace-node.yaml"
TECHNICIAN = "dc-tech"
SWAP_STEP = "swap"
RUN_STARTED = re.compile(r"^run (\S+) started")
COMMAND_OUTPUT = re.compile(r"^\S+\s+\S+ \| (?:node\d+|admin): ")
"""A log line echoing a remote command's output (the ceph JSON): hidden unless --verbose."""


def demo_env(lab: Lab, home: Path) -> dict[str, str]:
    env = {**os.environ, "HOTSWAP_INVENTORY": str(lab.inventory_path), "HOTSWAP_HOME": str(home)}
    env.pop("HOTSWAP_REDIS_URL", None)
    env.pop("HOTSWAP_CONFIG", None)
    return env


def hotswap(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def _swap_waiting(env: dict[str, str], run_id: str) -> bool | None:
    """True when the swap gate waits for approval, None when the run ended, else False."""
    proc = subprocess.run(hotswap("--json", "status", run_id), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        return False
    data: dict[str, Any] = json.loads(proc.stdout)
    if data["run"]["status"] in ("succeeded", "failed", "cancelled"):
        return None
    return any(s["id"] == SWAP_STEP and s["needs_approval"] for s in data["steps"])


def technician(env: dict[str, str], run_id: str, pause: float, stop: threading.Event) -> None:
    """Wait for the swap gate, then approve it as the technician after ``pause`` seconds."""
    while not stop.is_set():
        waiting = _swap_waiting(env, run_id)
        if waiting is None:
            return
        if waiting:
            break
        stop.wait(2.0)
    else:
        return
    print(f"\n>>> demo: the datacenter got the notice; {pause:g} s later the technician confirms the swap "
          f"(hotswap approve {run_id} {SWAP_STEP}, as {TECHNICIAN})\n", flush=True)
    if stop.wait(pause):
        return
    subprocess.run(hotswap("approve", run_id, SWAP_STEP), cwd=ROOT, env={**env, "HOTSWAP_USER": TECHNICIAN},
                   timeout=60, check=False)


def run_demo(lab_dir: str, node: str, reason: str, pause: float, verbose: bool) -> int:
    lab = Lab(lab_dir)
    started = time.monotonic()
    print(f">>> demo: bringing the Ceph lab up in {lab.root} (reused when already up) ...", flush=True)
    fresh = lab.up()
    print(f">>> demo: lab {'up' if fresh else 'already up'} ({time.monotonic() - started:.0f} s); "
          f"inventory {lab.inventory_path}", flush=True)
    lab.wait_settled(timeout=300)
    home = lab.root / "demo-home"
    env = demo_env(lab, home)
    command = hotswap("run", RUNBOOK, "-p", "cluster=lab", "-p", f"node={node}", "-p", f"reason={reason}",
                      "-p", "poll=2s", "--follow")
    print(f">>> demo: HOTSWAP_INVENTORY={lab.inventory_path} HOTSWAP_HOME={home} "
          f"hotswap run {RUNBOOK} -p cluster=lab -p node={node} -p reason='{reason}' -p poll=2s --follow\n",
          flush=True)
    stop = threading.Event()
    helper: threading.Thread | None = None
    run_id = ""
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if verbose or not COMMAND_OUTPUT.match(line):
                    print(line, end="", flush=True)
                match = RUN_STARTED.match(line)
                if match and helper is None:
                    run_id = match.group(1)
                    helper = threading.Thread(target=technician, args=(env, run_id, pause, stop), daemon=True)
                    helper.start()
            code = proc.wait()
        finally:
            stop.set()
            if helper is not None:
                helper.join(70)
    if run_id:
        print("", flush=True)
        subprocess.run(hotswap("status", run_id), cwd=ROOT, env=env, timeout=60, check=False)
    print(f"\n>>> demo: {'done' if code == 0 else 'the run did not succeed'} in {time.monotonic() - started:.0f} s. "
          f"The lab is still up ({lab.root}); the embedded engine keeps its state in {home}.")
    print(">>> demo: look around with HOTSWAP_HOME=" f"{home} hotswap runs / hotswap logs {run_id or 'RUN'}; "
          "bring everything down with: make lab-down (and HOTSWAP_HOME=" f"{home} hotswap down)")
    return code


def main(lab_dir: str, node: str = "node3", reason: str = "demo: PSU failure", pause: float = 5.0,
         verbose: bool = False) -> int:
    try:
        return run_demo(lab_dir, node, reason, pause, verbose)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
