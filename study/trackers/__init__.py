"""Experiment trackers (MLflow, W&B, TensorBoard): Ray's own logger callbacks, made when a study asks.

Each tracker's package (and its callback's module here) is imported only for a study whose
`loggers` name it: a study without them pays nothing for their being installed. `check_installed`
runs before Ray starts: a missing package is one line naming the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from study.errors import StudyError

# Logger -> (the module its Ray callback imports, the extra of this project that installs it).
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"), "tensorboard": ("tensorboardX", "tensorboard")}


def missing(loggers: tuple[str, ...]) -> str | None:
    """What the first logger whose package cannot be imported needs, or None."""
    for name in loggers:
        module, extra = PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # a module whose __spec__ is None
            found = False
        if not found:
            return f'loggers: {name} needs the {module} package; install it with pip install -e ".[{extra}]"'
    return None


def check_installed(loggers: tuple[str, ...]) -> None:
    """Every logger's package can be imported; else one line naming the extra."""
    message = missing(loggers)
    if message:
        raise StudyError(message)


def callbacks(loggers: tuple[str, ...], experiment: str, folder: str) -> list[Any]:
    """Ray's logger callbacks for `loggers`. `experiment` (the study's name) is the MLflow
    experiment and the default W&B project; `folder` (the experiment folder's name, one run of
    the study) tags the MLflow runs and is the W&B group."""
    made: list[Any] = []
    if "tensorboard" in loggers:
        from study.trackers.tensorboard import ScalarTensorBoard

        made.append(ScalarTensorBoard())
    if "mlflow" in loggers:
        from study.trackers.mlflow import EpochMLflow

        made.append(EpochMLflow(experiment_name=experiment, tags={"experiment_dir": folder}))
    if "wandb" in loggers:
        from study.trackers.wandb import StudyWandb

        made.append(StudyWandb(group=folder, default_project=experiment))
    return made
