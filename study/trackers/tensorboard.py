"""TensorBoard event files holding the scalars a user reads, not Tune's bookkeeping."""

from __future__ import annotations

from typing import Any

from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from study.trackers.scalars import scalars


class ScalarTensorBoard(TBXLoggerCallback):
    """Ray's TensorBoard logger, given only `scalars` (tags ray/tune/val_acc, ...), the epoch as the step."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = result.get("epoch", result[TRAINING_ITERATION])  # Ray's logger takes the step from here
        kept = {**scalars(result), TRAINING_ITERATION: step, "config": result.get("config", trial.config)}
        super().log_trial_result(iteration, trial, kept)
