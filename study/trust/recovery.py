"""Checkpoints after a crash: the newest one on disk, a fallback for a damaged one, unsigned ones.

After a crash of the driver, Tune's saved state, and the result.json files Tune copies to
storage with it, can be seconds older than the checkpoints on disk (the state is saved on a
period, see `study.tuning.settings.state_save_period`). A resumed trial then continues from its
newest checkpoint by epoch, not from the one Tune last recorded, and first reports again
("replayed": true) the epochs after that one, so that result.json, ASHA and Optuna have every
epoch. So at most the epoch in flight at the crash is trained again, when every epoch is
checkpointed (see `study.checkpoints.policy.checkpoint_due`).
"""

from __future__ import annotations

import glob
import os

from study.checkpoints.files import checkpoint_folders, is_readable, newest_by_meta, read_meta
from study.names import CHECKPOINT_FILE
from study.storage import is_uri, json_lines
from study.trust import signing
from study.trust.experiment_state import STATE_GLOB, trial_states


def recorded_epoch(trial_dir: str, checkpoint_path: str | None) -> int:
    """The newest epoch Tune's restored state knows for a trial: that of the checkpoint Tune
    handed over (its state, scheduler and searcher were saved together), 0 without one. When
    that checkpoint's files were pruned, the newest epoch in the trial's result.json instead."""
    if checkpoint_path is None:
        return 0
    meta = read_meta(checkpoint_path)
    if meta is not None:
        return meta["epoch"]
    epochs = [0]
    try:
        with open(os.path.join(trial_dir, "result.json")) as f:
            rows = json_lines(f.read())
    except OSError:
        rows = []
    for row in rows:
        try:
            epochs.append(int(row["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue
    return max(epochs)


def checkpoints_to_resume(experiment_path: str) -> list[str]:
    """The checkpoint file each unfinished trial will try first when resumed (see the module doc).

    That is its newest by meta.json; for checkpoints written before meta.json existed, the one
    Tune's state records with the trial's last result (read as plain JSON), else the newest name.
    """
    states = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    files = []
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        name = os.path.basename(os.path.dirname(trial_dir))
        state = known.get(name, {})
        if state.get("status") == "TERMINATED":
            continue  # finished: Tune will not load it again
        newest = [folder for folder, meta in newest_by_meta(trial_dir)]
        if newest:
            files.append(os.path.join(newest[0], CHECKPOINT_FILE))
            continue
        recorded = state.get("last_result", {}).get("checkpoint_dir_name")
        if isinstance(recorded, str) and os.path.basename(recorded) == recorded:
            files.append(os.path.join(trial_dir, recorded, CHECKPOINT_FILE))
            continue
        on_disk = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if on_disk:
            files.append(os.path.join(on_disk[-1], CHECKPOINT_FILE))
    return files


def fallback_checkpoint(trial_dir: str, corrupt: str) -> str | None:
    """The newest readable checkpoint file of a trial older than `corrupt`, or None (start over)."""
    folder = os.path.dirname(corrupt)
    ordered = [f for f, _ in newest_by_meta(trial_dir)]
    if folder in ordered:  # by epoch
        older = ordered[ordered.index(folder) + 1 :]
    else:  # checkpoints without meta.json: by name
        name = os.path.basename(folder)
        older = sorted(p for p in glob.glob(os.path.join(trial_dir, "checkpoint_*")) if os.path.basename(p) < name)
        older.reverse()
    for candidate in older:
        path = os.path.join(candidate, CHECKPOINT_FILE)
        if is_readable(path):
            return path
    return None


def verify_checkpoints(experiment_path: str) -> list[str]:
    """Load the checkpoint every unfinished trial will resume from; say what replaces a corrupt one.

    A checkpoint can be cut short (a full disk, a crash mid-write). Its trial then resumes from
    its newest readable older checkpoint, or from the start (see `study.tuning.trainable`), so a resume
    works in one step. Returns one warning line per such trial. Local folders only (on a URI the
    trials check for themselves).
    """
    if is_uri(experiment_path):
        return []
    warnings = []
    for path in checkpoints_to_resume(experiment_path):
        if is_readable(path):
            continue
        trial_dir = os.path.dirname(os.path.dirname(path))
        fallback = fallback_checkpoint(trial_dir, path)
        instead = f"from {os.path.relpath(fallback, trial_dir)}" if fallback else "from its first epoch"
        warnings.append(
            f"{path}: unreadable checkpoint (a full disk or a crash mid-write); the trial resumes {instead}"
        )
    return warnings


def unsigned_checkpoints(trial_dir: str) -> list[tuple[str, str]]:
    """(checkpoint folder, why) for each of a trial's checkpoints that this user's trial did not
    sign for it, or that changed since. A local one whose trainer.pt does not load is left out:
    nothing loads it (a resume skips it, see `verify_checkpoints`; export refuses it)."""
    key = signing.secret_key()
    found = []
    for folder in checkpoint_folders(trial_dir):
        why = signing.checkpoint_problem(folder, key)
        if why and (is_uri(folder) or is_readable(os.path.join(folder, CHECKPOINT_FILE))):
            found.append((folder, why))
    return found


def unsigned_to_resume(experiment_path: str) -> list[tuple[str, str]]:
    """unsigned_checkpoints of every trial a resume may load from: all but those Tune's state
    has finished (TERMINATED). A trial folder Tune's state lacks counts: a trial it starts under
    that name looks there for checkpoints of its config (see `study.tuning.trainable.resume`)."""
    states = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    found = []
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        name = os.path.basename(os.path.dirname(trial_dir))
        if known.get(name, {}).get("status") != "TERMINATED":
            found += unsigned_checkpoints(os.path.dirname(trial_dir))
    return found
