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


def verify_checkpoints(experiment_path: str) -> int:
    """Load the checkpoint every unfinished trial will resume from; a corrupt one is a StudyError.

    Runs before a resume so that a damaged file costs one line, not trials that crash and retry.
    Local folders only (a URI is checked by the trials themselves). Returns the number checked.
    """
    if is_uri(experiment_path):
        return 0
    files = checkpoints_to_resume(experiment_path)
    for path in files:
        read_checkpoint(path)
    return len(files)
