"""Helpers for tests that start `study` in a subprocess and kill things on purpose.

Every process a test starts is found again through its own PID's tree in /proc (with
benchmarks.processes, shared with the benchmarks) and stopped by PID; nothing is killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks.processes import alive, children_of


def in_session(sid: int) -> set[int]:
    """The processes of session `sid` (start_study starts each study in a session of its own)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[3]) == sid:
                        found.add(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def free_port(host: str = "") -> int:
    """A TCP port nothing listens on at `host` now ("": every address of this machine)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and every descendant it has now; wait until they are gone."""
    pids = children_of(proc.pid)
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)


def start_study(args: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "study", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def result_rows(trial_dir: str) -> list[dict]:
    """A trial's result.json as Ray wrote it: one dict per reported epoch ([] before the first)."""
    path = os.path.join(trial_dir, "result.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def experiment_rows(exp_dir: str) -> dict[str, list[dict]]:
    """result_rows for every trial folder of an experiment, by folder name."""
    return {name: rows for name in sorted(os.listdir(exp_dir)) if (rows := result_rows(os.path.join(exp_dir, name)))}
