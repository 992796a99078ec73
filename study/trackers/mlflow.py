"""MLflow: one run per trial, under an MLflow experiment named after the study's."""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from study.trackers import scalars


class EpochMLflow(MLflowLoggerCallback):
    """Ray's MLflow logger (MLflow's own MLFLOW_TRACKING_URI and default store; the config as
    params), given the scalars a user reads, with the epoch as the step."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = int(result.get("epoch", iteration))
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=scalars(result), step=step)
