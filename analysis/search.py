"""A search's trials (random or Optuna, as opposed to an ablation): best configurations, Optuna study.

Pure functions over the tidy frame (see `study.analysis.load`) and the `searched` domains each
trial's config records. The Optuna study is built from the trial records, in memory, through
Optuna's public API (`create_trial`, `add_trials`); nothing is read from Ray's searcher state.
`write_study_file` saves it as optuna.db, which optuna-dashboard opens.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.trials import trial_summary


def searched_fields(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """field -> {"kind", "values"} of the experiment's sampled fields ({} for an ablation).

    The frame's `searched` column holds them as JSON text (from each trial's params.json)."""
    texts = frame["searched"].dropna() if "searched" in frame else pd.Series(dtype=object)
    try:
        fields = json.loads(texts.iloc[0]) if len(texts) else {}
    except (TypeError, ValueError):
        return {}
    return (
        {k: v for k, v in fields.items() if isinstance(v, dict) and f"config_{k}" in frame}
        if isinstance(fields, dict)
        else {}
    )


def optuna_state(row: pd.Series) -> str:
    """COMPLETE (reached max_t), PRUNED (ASHA stopped it), FAIL (error or divergence), RUNNING."""
    if row["status"] == "ERROR" or bool(row["diverged"]):
        return "FAIL"
    if row["epochs_run"] >= row["max_t"]:
        return "COMPLETE"
    return "PRUNED" if row["status"] == "TERMINATED" else "RUNNING"


def search_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: searched parameters, the metric at its last epoch, epochs and state."""
    trials = trial_summary(frame)
    fields = searched_fields(frame)
    metric = frame["metric"].dropna().iloc[0] if "metric" in frame and frame["metric"].notna().any() else "test_acc"
    column = "final_test_acc" if metric == "test_acc" else metric
    out = pd.DataFrame(
        {
            "experiment": trials["experiment"],
            "trial": trials["trial_dir"] if "trial_dir" in trials else trials["trial_id"],
            **{name: trials[f"config_{name}"] for name in fields},
            "seed": trials["config_seed"],
            metric: trials[column],
            "epochs": trials["epochs_run"],
            "state": trials.apply(optuna_state, axis=1),
        }
    )
    return out


def best_configurations(frame: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The `top` trials by the file's metric and mode, with their searched parameters."""
    trials = search_trials(frame)
    metric, mode = study_objective(frame)
    return trials.sort_values(metric, ascending=mode == "min").head(top).reset_index(drop=True)


def study_objective(frame: pd.DataFrame) -> tuple[str, str]:
    metric = frame["metric"].dropna().iloc[0] if "metric" in frame and frame["metric"].notna().any() else "test_acc"
    mode = frame["mode"].dropna().iloc[0] if "mode" in frame and frame["mode"].notna().any() else "max"
    return str(metric), str(mode)


def distribution(domain: dict[str, Any]) -> Any:
    import optuna.distributions as d

    kind, values = domain["kind"], domain["values"]
    if kind == "uniform":
        return d.FloatDistribution(float(values[0]), float(values[1]))
    if kind == "loguniform":
        return d.FloatDistribution(float(values[0]), float(values[1]), log=True)
    if kind == "randint":  # [low, high): Tune's high is exclusive, Optuna's inclusive
        return d.IntDistribution(int(values[0]), int(values[1]) - 1)
    return d.CategoricalDistribution(list(values))


def optuna_study(frame: pd.DataFrame, storage: Any = None) -> Any:
    """The experiment's trials as an Optuna study (in memory, or in `storage`), with states and
    per-epoch intermediate values, so Optuna's importance, plots and dashboard work on it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fields = searched_fields(frame)
    metric, mode = study_objective(frame)
    name = str(frame["experiment"].iloc[0])
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize" if mode == "max" else "minimize", load_if_exists=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])  # the dashboard's name for the objective, not "Objective 0"
    distributions = {field: distribution(domain) for field, domain in fields.items()}
    states = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED}
    states["FAIL"] = optuna.trial.TrialState.FAIL
    records = []
    for row in search_trials(frame).itertuples(index=False):
        row = row._asdict()
        if row["state"] == "RUNNING":
            continue  # not finished: neither a result nor a failure yet
        epochs = frame[frame["trial_id"] == trial_id_of(frame, row["trial"])]
        intermediate = {
            int(e): float(v) for e, v in zip(epochs["epoch"], epochs[metric], strict=True) if math.isfinite(v)
        }
        state = states[row["state"]]
        value = row[metric] if state == optuna.trial.TrialState.COMPLETE else None
        if value is not None and not math.isfinite(value):
            state, value = optuna.trial.TrialState.FAIL, None
        records.append(
            optuna.trial.create_trial(
                params={f: native(row[f]) for f in fields},
                distributions=distributions,
                value=value,
                state=state,
                intermediate_values=intermediate,
                user_attrs={"trial": str(row["trial"]), "seed": int(row["seed"]), "epochs": int(row["epochs"])},
            )
        )
    study.add_trials(records)
    return study


def trial_id_of(frame: pd.DataFrame, trial: str) -> str:
    if "trial_dir" in frame:
        match = frame.loc[frame["trial_dir"] == trial, "trial_id"]
        if len(match):
            return str(match.iloc[0])
    return trial


def native(value: Any) -> Any:
    """numpy scalars -> Python ones, as Optuna's distributions compare them."""
    return value.item() if isinstance(value, np.generic) else value


def write_study_file(frames: list[pd.DataFrame], path: str) -> str:
    """optuna.db (SQLite, Optuna's RDB storage), one study per search experiment, for
    `optuna-dashboard PATH`. Written anew each time, whole or not at all."""
    import secrets

    import optuna

    from study.storage import check_no_symlink

    check_no_symlink(os.path.dirname(path), path)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))  # SQLite fills it
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
    for frame in frames:
        optuna_study(frame, storage=storage)
    storage.remove_session()
    storage.engine.dispose()
    os.replace(tmp, path)
    return path
