"""The numbers each tracker logs per epoch: the scalars a user reads, not Tune's bookkeeping."""

from __future__ import annotations

from typing import Any

# What a user reads in a tracker, per epoch: losses and accuracies per split, speed, memory and
# checkpoint costs. Tune's bookkeeping (done, pid, timestamps, time_*, ...) is left out.
SCALARS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "train_eval_loss",
    "train_eval_acc",
    "epoch_time_s",
    "images_per_s",
    "rss_mb",
    "peak_rss_mb",
    "checkpoint_s",
    "checkpoint_mb",
)


def scalars(result: dict[str, Any]) -> dict[str, float]:
    """The scalars of one epoch's result that a user reads (SCALARS), where the trial reported them."""
    return {
        k: result[k] for k in SCALARS if isinstance(result.get(k), (int, float)) and not isinstance(result[k], bool)
    }
