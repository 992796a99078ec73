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


def verify_checkpoints(experiment_path: str) -> int:
    """Load the newest checkpoint of every trial; a corrupt one is a StudyError.

    Runs before a resume so that a damaged file costs one line, not trials that crash and retry.
    Local folders only (a URI is checked by the trials themselves). Returns the number checked.
    """
    if is_uri(experiment_path):
        return 0
    checked = 0
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        checkpoints = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if checkpoints:
            read_checkpoint(os.path.join(checkpoints[-1], CHECKPOINT_FILE))
            checked += 1
    return checked
