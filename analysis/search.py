"""What a search (random or Optuna, as opposed to an ablation) needs: best configurations, which
hyperparameters mattered, plots, and an Optuna study file that optuna-dashboard opens.

Pure functions over the tidy frame (see `study.analysis.load`) and the `searched` domains each
trial's config records. The Optuna study is built from the trial records, in memory, through
Optuna's public API (`create_trial`, `add_trials`); nothing is read from Ray's searcher state.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.tables import trial_summary


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


# Below this many trials that reached max_t, a ranking of parameters is a few trials' luck (docs/analysis.md).
MIN_IMPORTANCE_TRIALS = 10


def complete_trials(study: Any) -> list[Any]:
    """The trials importance is computed over, as Optuna's evaluators select them: COMPLETE (reached
    max_t) with a finite value."""
    import optuna

    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if math.isfinite(t.value)
    ]


def importance_note(study: Any) -> str | None:
    """Why the study gets no importance table (too few complete trials, an objective that does not
    vary, nothing sampled), in one line; None when it gets one."""
    complete = complete_trials(study)
    metric = (study.metric_names or ["the objective"])[0]
    if study.trials and not study.trials[0].distributions:
        return "no importance: nothing is sampled"
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return (
            f"no importance: {len(complete)} trial{'s' * (len(complete) != 1)} reached max_t (COMPLETE); "
            f"importance needs at least {MIN_IMPORTANCE_TRIALS}"
        )
    if len({t.value for t in complete}) == 1:
        return f"no importance: {metric} is the same in all {len(complete)} trials that reached max_t"
    return None


def importance_target(study: Any) -> Any:
    """optuna-dashboard's target: PED-ANOVA ranks low values best, so a maximised metric is negated."""
    import optuna

    if study.direction == optuna.study.StudyDirection.MAXIMIZE:
        return lambda t: -t.values[0]
    return lambda t: t.values[0]


def importances(study: Any) -> pd.DataFrame:
    """Each searched parameter's importance as optuna-dashboard computes it (Optuna's PED-ANOVA,
    default quantiles, over the COMPLETE trials), with the number of trials it used; no rows when
    `importance_note` says why not."""
    import optuna

    columns = ["parameter", "importance", "n_trials"]
    if importance_note(study) is not None:
        return pd.DataFrame(columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns whenever a target is given (as the dashboard does)
        values = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=importance_target(study)
        )
    n_trials = len(complete_trials(study))
    return pd.DataFrame({"parameter": list(values), "importance": list(values.values()), "n_trials": n_trials})[columns]


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


def search_plots(study: Any, out: str, experiment: str) -> list[str]:
    """Optuna's own matplotlib plots: the metric against each parameter, and parallel coordinates."""
    import optuna.visualization.matplotlib as ovm
    from matplotlib.ticker import NullFormatter

    from study.analysis.plots import plot_file_name, pyplot, save_figure

    plt = pyplot()

    written = []
    for kind, plot in (("slice", ovm.plot_slice), ("parallel", ovm.plot_parallel_coordinate)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            axes = plot(study)
        for ax in np.ravel(axes):
            if ax.get_xscale() == "log":  # a log-uniform field: matplotlib labels its minor ticks on top of each other
                ax.xaxis.set_minor_formatter(NullFormatter())
        figure = np.ravel(axes)[0].figure
        path = os.path.join(out, plot_file_name(experiment).replace("curves_", f"{kind}_"))
        save_figure(figure, path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written
