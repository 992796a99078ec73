"""When a trial writes a checkpoint, and where it writes one before Tune moves it to storage."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

CHECKPOINT_SHARE = 0.05  # checkpoint_every 0 (auto): writing stays at or under this share of training


def scratch_root() -> str | None:
    """This user's folder for checkpoints being written, cleared of those whose writer died.

    A trial writes each checkpoint into a temporary folder here (named after its process id)
    before Tune moves it to storage. A worker killed meanwhile (out of memory, SIGKILL) would
    leave it in the temp dir for good: a width-1024 CNN's is 2 GB. Each trial's start removes
    the folders of processes that no longer run. None (use the plain temp dir) when the folder
    cannot be made or belongs to someone else.
    """
    root = os.path.join(tempfile.gettempdir(), f"study-checkpoints-{os.getuid()}")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if os.stat(root).st_uid != os.getuid():
            return None
        for name in os.listdir(root):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    except OSError:
        return None
    return root


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def always_checkpointed(epoch: int, epochs: int, stop_epochs: tuple[int, ...]) -> bool:
    """The last epoch, and one at which the scheduler may stop the trial (then its last)."""
    return epoch >= epochs or epoch in stop_epochs


def checkpoint_due(
    every: int,
    epochs: int,
    history: list[Mapping[str, Any]],
    write_s: float = 0.0,
    stop_epochs: tuple[int, ...] = (),
) -> bool:
    """Whether to checkpoint the epoch just trained, the last entry of `history` (metrics per epoch).

    Always: the last epoch, an epoch at which the scheduler may stop the trial (`stop_epochs`,
    ASHA's rungs: it is then the trial's last, the one `study export` takes), and a diverged
    one. `every` > 0: also every that many epochs. `every` 0 (auto): `write_s` is what a write
    is expected to take (see `expected_write_s`), and a checkpoint is written once the epochs
    trained since the newest one (or since the start) took at least 1/CHECKPOINT_SHARE times as
    long, unless the epochs until the next one that is always written (at this trial's mean
    epoch time) take less than that: that one then comes soon enough. So every epoch while a
    write costs at most 5% of an epoch; otherwise every write but the forced ones follows at
    least 20 writes' worth of training, and a crash repeats at most about that much.
    """
    current = history[-1]
    if always_checkpointed(current["epoch"], epochs, stop_epochs) or current.get("diverged"):
        return True
    if every:
        return current["epoch"] % every == 0
    budget = write_s / CHECKPOINT_SHARE  # seconds of training one write must pay for
    trained = 0.0
    for metrics in reversed(history):
        if "checkpoint_s" in metrics:
            break
        trained += metrics["epoch_time_s"]
    mean_epoch_s = sum(m["epoch_time_s"] for m in history) / len(history)
    next_forced = min([e for e in stop_epochs if e > current["epoch"]] + [epochs])
    return trained >= budget and mean_epoch_s * (next_forced - current["epoch"]) >= budget


class WriteSpeed:
    """How fast this process writes checkpoints (bytes/s): measured by a probe, then by each write.

    One per worker process (`WRITE_SPEED`), so a reused worker's later trials expect their first
    write to take what the earlier trials' writes took, and only a worker's first trial probes.
    """

    PROBE_BYTES = 64 * 2**20  # at most; enough to see the disk's speed, not its latency

    def __init__(self) -> None:
        self.bytes_per_s: float | None = None

    def note(self, nbytes: int, seconds: float) -> None:
        """A write of `nbytes` that took `seconds`."""
        if seconds > 0:
            self.bytes_per_s = nbytes / seconds

    def probe(self, nbytes: int, folder: str | None) -> float:
        """torch.save `nbytes` (at most PROBE_BYTES) into `folder`, then delete it; the seconds it took.

        The bytes are an uninitialised tensor: pages the kernel maps to its zero page as they are
        read, so the probe adds nothing to the trial's peak memory (zeros would add PROBE_BYTES).
        """
        import torch

        size = max(1, min(nbytes, self.PROBE_BYTES))
        with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-probe-", dir=folder) as scratch:
            start = time.perf_counter()
            torch.save(torch.empty(size, dtype=torch.uint8), os.path.join(scratch, "probe.pt"))
            seconds = time.perf_counter() - start
        self.note(size, seconds)
        return seconds


WRITE_SPEED = WriteSpeed()


def expected_write_s(history: list[Mapping[str, Any]], state_bytes: int, folder: str | None) -> tuple[float, float]:
    """(seconds the trial's next checkpoint should take to write, seconds spent probing for it).

    The trial's own newest write when it has one (`checkpoint_s` in `history`), else its state's
    size at this process's measured speed, probed first (once per process) when there is none.
    """
    for metrics in reversed(history):
        if "checkpoint_s" in metrics:
            return float(metrics["checkpoint_s"]), 0.0
    probe_s = 0.0 if WRITE_SPEED.bytes_per_s else WRITE_SPEED.probe(state_bytes, folder)
    speed = WRITE_SPEED.bytes_per_s
    return (state_bytes / speed if speed else 0.0), probe_s
