"""A last readable copy of Tune's experiment state, so that a crash mid-write loses nothing.

Ray writes `experiment_state-*.json` (and the search state beside it) in place, after every
step. A driver killed during that write leaves a truncated file that neither `Tuner.restore` nor
`ExperimentAnalysis` can read, and the whole study looks lost although every trial's checkpoints
are intact. `StateBackup` keeps a copy of the last state that parsed, taken after Tune's own save;
`repair_state` puts it back before a resume or an analysis. Local folders only.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from ray.tune import Callback

from study.errors import StudyError

BACKUP_DIR = ".study-state-backup"


def state_files(experiment_path: str) -> list[str]:
    """The experiment folder's own files (state, search state, tuner.pkl), not the trial folders."""
    return sorted(
        p for p in glob.glob(os.path.join(experiment_path, "*")) if os.path.isfile(p)
    )


def readable(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


class StateBackup(Callback):
    """After Tune's step (which saves the state), copy the folder's files if the state parses.

    Args:
        experiment_path: the experiment folder; a URI (s3://...) turns the backup off.
        every_s: at most one copy per this many seconds.
    """

    def __init__(self, experiment_path: str, every_s: float = 1.0) -> None:
        self.path = experiment_path
        self.every_s = every_s
        self.last_copy = 0.0
        self.last_signature: tuple = ()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if "://" in self.path or now - self.last_copy < self.every_s or not os.path.isdir(self.path):
            return
        self.last_copy = now
        files = state_files(self.path)
        signature = tuple((p, os.path.getmtime(p), os.path.getsize(p)) for p in files)
        states = [p for p in files if os.path.basename(p).startswith("experiment_state-")]
        if signature == self.last_signature or not states or not all(readable(p) for p in states):
            return  # unchanged, or caught mid-write: keep the previous copy
        staging = tempfile.mkdtemp(prefix=".study-state-new-", dir=self.path)
        for p in files:
            shutil.copy2(p, staging)
        old = os.path.join(self.path, BACKUP_DIR)
        retired = old + ".old"
        if os.path.isdir(old):
            os.replace(old, retired)
        os.replace(staging, old)  # the backup is always either the old or the new complete copy
        shutil.rmtree(retired, ignore_errors=True)
        self.last_signature = signature


def repair_state(experiment_path: str, settle_s: float = 2.0) -> bool:
    """If a state file is unreadable, put the last good copy back. Returns True if it did."""
    if "://" in experiment_path or not os.path.isdir(experiment_path):
        return False
    states = glob.glob(os.path.join(experiment_path, "experiment_state-*.json"))
    broken = [p for p in states if not readable(p)]
    if broken and max(time.time() - os.path.getmtime(p) for p in broken) < settle_s:
        time.sleep(settle_s)  # maybe a live run is writing it right now
        broken = [p for p in broken if not readable(p)]
    if not broken:
        return False
    backup = os.path.join(experiment_path, BACKUP_DIR)
    if not os.path.isdir(backup):
        raise StudyError(f"{broken[0]}: experiment state cut short (a crash mid-write) and no backup copy to restore")
    for p in state_files(backup):
        shutil.copy2(p, experiment_path)
    print(f"[study] {os.path.basename(broken[0])} was cut short by a crash; restored the last good copy "
          f"from {BACKUP_DIR}/", file=sys.stderr)  # fmt: skip
    return True
