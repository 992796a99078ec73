"""Weights & Biases: one run per trial, grouped by the study's experiment."""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.air.util.node import _force_on_current_node
from ray.tune.result import TRAINING_ITERATION

from study.trackers.scalars import scalars


class StudyWandb(WandbLoggerCallback):
    """Ray's W&B logger, given the scalars a user reads, with W&B's own WANDB_PROJECT (default:
    the experiment's name), read as the study starts or resumes; a resumed trial logs on to its run."""

    def __init__(self, *, default_project: str, **kwargs: Any) -> None:
        super().__init__(**{"resume": "allow", **kwargs})  # a resumed trial logs on to its run (its id)
        self.default_project = default_project

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.project = os.environ.get("WANDB_PROJECT") or self.default_project
        # The logging actor is a Ray worker, whose environment is its node's, not this shell's: it
        # gets the shell's WANDB_* settings (WANDB_MODE, WANDB_DIR, ...); Ray's own passes the API key only.
        self._remote_logger_class = ray.remote(
            num_cpus=0,
            **_force_on_current_node(),
            runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}},
            max_restarts=-1,
            max_task_retries=-1,
        )(self._logger_actor_cls)
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        epoch = result.get("epoch", result[TRAINING_ITERATION])
        super().log_trial_result(iteration, trial, {**scalars(result), "epoch": epoch, TRAINING_ITERATION: epoch})
