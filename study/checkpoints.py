"""Reading trial checkpoints safely: tensors and plain containers only, one message when corrupt."""

from __future__ import annotations

import glob
import os
from typing import Any

from study.errors import StudyError, reason
from study.schema import CHECKPOINT_FILE
from study.storage import is_uri


def read_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`: never an arbitrary pickle. Unreadable is a StudyError."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, missing file: all mean "corrupt"
        raise StudyError(
            f"{path}: corrupt checkpoint ({reason(exc, 100)}); delete that checkpoint_* folder "
            "to resume the trial from the one before it"
        ) from None


def checkpoints_to_resume(experiment_path: str) -> list[str]:
    """The checkpoint file each unfinished trial will resume from.

    That is the one Tune's state records with the trial's last result (read as plain JSON),
    not merely the newest on disk: after a crash, a newer checkpoint folder can exist that Tune
    never recorded. Trials the state does not know fall back to their newest checkpoint.
    """
    from study.experiment_state import STATE_GLOB, trial_states

    states = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    files = []
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        name = os.path.basename(os.path.dirname(trial_dir))
        state = known.get(name, {})
        if state.get("status") == "TERMINATED":
            continue  # finished: Tune will not load it again
        recorded = state.get("last_result", {}).get("checkpoint_dir_name")
        if isinstance(recorded, str) and os.path.basename(recorded) == recorded:
            files.append(os.path.join(trial_dir, recorded, CHECKPOINT_FILE))
            continue
        on_disk = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if on_disk:
            files.append(os.path.join(on_disk[-1], CHECKPOINT_FILE))
    return files


def is_readable(path: str) -> bool:
    try:
        read_checkpoint(path)
        return True
    except StudyError:
        return False


def fallback_checkpoint(trial_dir: str, corrupt: str) -> str | None:
    """The newest readable checkpoint file of a trial older than `corrupt`, or None (start over)."""
    name = os.path.basename(os.path.dirname(corrupt))
    older = sorted(p for p in glob.glob(os.path.join(trial_dir, "checkpoint_*")) if os.path.basename(p) < name)
    for folder in reversed(older):
        path = os.path.join(folder, CHECKPOINT_FILE)
        if is_readable(path):
            return path
    return None


def verify_checkpoints(experiment_path: str) -> list[str]:
    """Load the checkpoint every unfinished trial will resume from; say what replaces a corrupt one.

    A checkpoint can be cut short (a full disk, a crash mid-write). Its trial then resumes from
    its newest readable older checkpoint, or from the start (see `study.trainable`), so a resume
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
