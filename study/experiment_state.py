"""Tune's experiment state on disk: find it, tell a whole file from a cut one, repair it. No Ray.

Ray writes `experiment_state-*.json` (and the search state beside it) in place, after a step. A
driver killed during that write leaves a truncated file that neither `Tuner.restore` nor the
analysis can read, and the whole study looks lost although every trial's checkpoints are intact.
`study.state_backup.StateBackup` keeps a copy of the last state that parsed; `repair_state` puts
it back before a resume or an analysis. Local folders only.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time

from study.errors import StudyError
from study.storage import is_uri

BACKUP_DIR = ".study-state-backup"
STATE_GLOB = "experiment_state-*.json"


def state_files(experiment_path: str) -> list[str]:
    """The experiment folder's own files (state, search state, tuner.pkl), not the trial folders."""
    return sorted(p for p in glob.glob(os.path.join(experiment_path, "*")) if os.path.isfile(p))


def readable(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def repair_state(experiment_path: str, settle_s: float = 2.0) -> bool:
    """If a state file is unreadable, put the last good copy back. Returns True if it did."""
    if is_uri(experiment_path) or not os.path.isdir(experiment_path):
        return False
    states = glob.glob(os.path.join(experiment_path, STATE_GLOB))
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
    print(
        f"[study] {os.path.basename(broken[0])} was cut short by a crash; restored the last good copy from {BACKUP_DIR}/",
        file=sys.stderr,
    )
    return True
