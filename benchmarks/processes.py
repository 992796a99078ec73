"""Find a simulated Ray cluster's processes through /proc and stop them by PID, never by name."""

from __future__ import annotations

import os
import signal
import time


def children_of(pid: int) -> list[int]:
    """All descendants of `pid`, from /proc (no psutil needed)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return found


def cluster_pids(temp_dir: str) -> list[int]:
    """A `ray start` cluster's processes: those naming its own --temp-dir, and their children."""
    own = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if temp_dir.encode() in f.read():
                        own.append(int(entry))
            except OSError:
                continue
    return sorted({p for pid in own for p in [pid, *children_of(pid)]})


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_cluster(temp_dir: str) -> None:
    """SIGKILL a cluster's processes (see cluster_pids); wait until they are gone."""
    pids = cluster_pids(temp_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
