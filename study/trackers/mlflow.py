"""MLflow: one run per trial, under an MLflow experiment named after the study's."""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from study.trackers.scalars import scalars


class EpochMLflow(MLflowLoggerCallback):
    """Ray's MLflow logger (MLflow's own MLFLOW_TRACKING_URI and default store; the config as
    params), given the scalars a user reads, with the epoch as the step. A resumed trial logs on
    to its run, found by its tags (trial name and experiment folder)."""

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            tags = {**self.tags, "trial_name": str(trial)}
            query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
            client = self.mlflow_util._get_client()
            runs = client.search_runs([self.mlflow_util.experiment_id], filter_string=query, max_results=1)
            if runs:
                self._trial_runs[trial] = runs[0].info.run_id
                client.update_run(runs[0].info.run_id, status="RUNNING")
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = int(result.get("epoch", iteration))
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=scalars(result), step=step)
