"""One driver per experiment folder: the lock a running study holds on it.

`study run` and `study resume` hold `EXP/.study-lock` for as long as they run; a second driver on
the same folder is refused, naming the holder. The file is made with O_CREAT | O_EXCL, which is
atomic on local disks and on NFS (v3 and later), and holds the holder's pid, host and start
time. A lock is stale, and taken over with a note, when its host is this one and its pid is gone,
or is now some other program (pids are reused) or another user's. A lock from another host is
never judged: its owner removes it. URIs (s3://...) have no exclusive create, and no lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sys
from typing import Any

from study.errors import StudyError
from study.storage import check_no_symlink, is_uri

LOCK_FILE = ".study-lock"

# The locks this process holds, released by `release_all` whichever way the command ends.
held: list[str] = []


def lock_path(experiment_path: str) -> str:
    return os.path.join(experiment_path, LOCK_FILE)


def take(experiment_path: str) -> None:
    """Hold the experiment's lock until `release_all`; refuse (one line) if a live driver holds it."""
    if is_uri(experiment_path) or lock_path(experiment_path) in held:
        return
    path = lock_path(experiment_path)
    check_no_symlink(experiment_path, path)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if attempt == 0 and holder is not None and stale(holder):
                remove_stale(path, holder)
                continue
            raise refusal(experiment_path, holder) from None
        except OSError as exc:  # read-only storage, say
            raise StudyError(
                f"{experiment_path}: cannot write in the experiment folder ({exc.strerror}); a run or resume "
                "writes Tune's state there (to read it, use `study analyze EXP --out ELSEWHERE`)"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        held.append(path)
        stop_on_hangup_or_term()
        return


def release_all() -> None:
    """Remove the locks this process holds (only its own: a file another process wrote stays)."""
    while held:
        path = held.pop()
        holder = read_holder(path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
    restore_signals()


def read_holder(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def stale(holder: dict[str, Any]) -> bool:
    """Whether the holder is surely gone: on this host, and its pid no study process of this user."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    return not is_own_study(pid)


def is_own_study(pid: int) -> bool:
    """Whether `pid` is alive, this user's, and `study` (`python -m study`, or the `study` script)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False  # gone (or a zombie with no command line)
    named = any(os.path.basename(a) == "study" for a in args[:3]) or any(
        a == "-m" and b == "study" for a, b in zip(args, args[1:], strict=False)
    )
    return named and owner == os.getuid()


def describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an unknown process (the lock file is unreadable)"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


def refusal(experiment_path: str, holder: dict[str, Any] | None) -> StudyError:
    return StudyError(
        f"{experiment_path}: another study is running on it ({describe(holder)}); wait for it to end, or stop "
        f"it; if it is surely gone (a crashed host), delete {lock_path(experiment_path)}"
    )


def remove_stale(path: str, holder: dict[str, Any]) -> None:
    if read_holder(path) != holder:  # another driver took it over in between: its lock now
        return
    os.remove(path)
    print(f"[study] removed a stale lock of {describe(holder)}: that study is no longer running", file=sys.stderr)


def leave(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def stop_on_hangup_or_term() -> None:
    """SIGTERM and SIGHUP end the command through Python's unwinding (so the lock is released)
    where nothing else handles them; around the trials `study.run.signals.stop_signals` does."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) in (signal.SIG_DFL, None):
            signal.signal(s, leave)


def restore_signals() -> None:
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is leave:
            signal.signal(s, signal.SIG_DFL)
