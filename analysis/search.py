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
    """slice_EXPERIMENT.png and parallel_EXPERIMENT.png: the metric against each sampled field, and
    in parallel coordinates, over the trials that reached max_t (as Optuna's own plots)."""
    from study.analysis.plots import plot_file_name, pyplot, save_figure

    plt = pyplot()
    written = []
    for kind, draw in (("slice", slice_figure), ("parallel", parallel_figure)):
        figure = draw(study, experiment)
        path = os.path.join(out, plot_file_name(experiment).replace("curves_", f"{kind}_"))
        save_figure(figure, path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plotted_trials(study: Any) -> tuple[str, list[str], list[Any]]:
    """The metric's name, the sampled fields and the trials a search plot shows (COMPLETE, finite)."""
    metric = (study.metric_names or ["objective"])[0]
    fields = sorted({name for t in study.trials for name in t.distributions})
    return metric, fields, complete_trials(study)


def field_distribution(study: Any, field: str) -> Any:
    return next(t.distributions[field] for t in study.trials if field in t.distributions)


def axis_label(study: Any, field: str) -> str:
    return f"{field} (log scale)" if getattr(field_distribution(study, field), "log", False) else field


def slice_figure(study: Any, experiment: str) -> Any:
    """The metric against each sampled field, a panel per field; colour: Optuna's trial number (the
    order the trials were added to optuna.db, 0 to n - 1), over all n trials of the study."""
    import optuna.distributions as d
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    from study.analysis.plots import log_ticks, style

    metric, fields, trials = plotted_trials(study)
    with style() as plt:
        figure, axes = plt.subplots(
            1, max(len(fields), 1), figsize=(3.4 * max(len(fields), 1) + 1.6, 4.0), sharey=True, layout="constrained"
        )
        axes = np.ravel(axes)
        numbers = Normalize(0, max(len(study.trials) - 1, 1))
        points = None
        for ax, field in zip(axes, fields, strict=False):
            shown = [t for t in trials if field in t.params]
            dist = field_distribution(study, field)
            x = [t.params[field] for t in shown]
            if isinstance(dist, d.CategoricalDistribution):
                choices = list(dist.choices)
                x = [choices.index(v) for v in x]
                ax.set_xticks(range(len(choices)), [str(c) for c in choices])
                ax.set_xlim(-0.5, len(choices) - 0.5)
            points = ax.scatter(
                x,
                [t.value for t in shown],
                c=[t.number for t in shown],
                cmap="viridis",
                norm=numbers,
                s=45,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
            if getattr(dist, "log", False):
                ax.set_xscale("log")
                ax.set_xlim(dist.low / 1.15, dist.high * 1.15)  # the searched range, so that it has ticks
                log_ticks(ax.xaxis, *ax.get_xlim())
            elif not isinstance(dist, d.CategoricalDistribution):
                pad = 0.05 * (dist.high - dist.low) or 0.5
                ax.set_xlim(dist.low - pad, dist.high + pad)
                if isinstance(dist, d.IntDistribution):
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(axis_label(study, field))
        axes[0].set_ylabel(metric)
        if points is not None:
            bar = figure.colorbar(
                points, ax=axes, label=f"trial number (0 to {len(study.trials) - 1}, as in optuna.db)"
            )
            bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.suptitle(
            f"{experiment}: {metric} at max_t against each sampled field "
            f"({len(trials)} of {len(study.trials)} trials reached max_t)"
        )
    return figure


def parallel_figure(study: Any, experiment: str) -> Any:
    """Parallel coordinates: an axis for the metric and one per sampled field, a line per trial
    coloured by the metric (viridis, reversed for a minimised one: the worst line dark, never white),
    the best drawn on top."""
    import optuna.distributions as d
    from matplotlib.colors import Normalize
    from matplotlib.ticker import LogLocator, MaxNLocator

    from study.analysis.plots import style

    def nice(a: float, b: float, log: bool = False, integer: bool = False) -> list[float]:
        """Round tick values within [a, b] (1, 2 and 5 of each decade on a log axis)."""
        locator = LogLocator(subs=(1.0, 2.0, 5.0)) if log else MaxNLocator(5, integer=integer)
        ticks = [float(v) for v in locator.tick_values(a, b) if a - 1e-12 <= v <= b + 1e-12]
        return ticks if len(ticks) >= 2 else [a, b]

    metric, fields, trials = plotted_trials(study)
    maximize = study.direction.name == "MAXIMIZE"
    trials = sorted(trials, key=lambda t: t.value if maximize else -t.value)  # the best last: on top
    values = [t.value for t in trials]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5

    def scale(field: str) -> tuple[Any, list[tuple[float, str]]]:
        """value -> [0, 1] on the field's axis, and its tick positions with labels."""
        if field == metric:
            ticks = nice(low, high)
            return (lambda v: (v - low) / (high - low)), [((v - low) / (high - low), f"{v:.3g}") for v in ticks]
        dist = field_distribution(study, field)
        if isinstance(dist, d.CategoricalDistribution):
            choices = list(dist.choices)
            step = 1 / max(len(choices) - 1, 1)
            return (lambda v: choices.index(v) * step), [(i * step, str(c)) for i, c in enumerate(choices)]
        a, b = float(dist.low), float(dist.high)
        if getattr(dist, "log", False):
            ticks = nice(a, b, log=True)
            a, b = math.log10(a), math.log10(b)
            return (lambda v: (math.log10(v) - a) / (b - a)), [((math.log10(v) - a) / (b - a), f"{v:g}") for v in ticks]
        if b <= a:
            b = a + 1
        ticks = nice(a, b, integer=isinstance(dist, d.IntDistribution))
        return (lambda v: (v - a) / (b - a)), [((v - a) / (b - a), f"{v:.3g}") for v in ticks]

    columns = [metric, *fields]
    scales = [scale(c) for c in columns]
    with style() as plt:
        figure, ax = plt.subplots(figsize=(2.3 * len(columns) + 2.0, 4.6), layout="constrained")
        colours = Normalize(low, high)
        cmap = plt.get_cmap("viridis" if maximize else "viridis_r")  # the best bright, the worst dark
        for t in trials:
            y = [
                to_axis(t.value if c == metric else t.params.get(c))
                for c, (to_axis, _) in zip(columns, scales, strict=True)
            ]
            ax.plot(range(len(columns)), y, color=cmap(colours(t.value)), lw=1.8, alpha=0.9)
        for i, (_, ticks) in enumerate(scales):
            ax.axvline(i, color="#333333", lw=1)
            for position, label in ticks:
                ax.text(
                    i + 0.04,
                    position,
                    label,
                    va="center",
                    ha="left",
                    fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
                )
        ax.set_xticks(range(len(columns)), [metric, *(axis_label(study, f) for f in fields)])
        ax.set_xlim(-0.15, len(columns) - 1 + 0.6)  # room for the last axis's tick labels
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([])
        ax.grid(False)
        ax.set_ylabel("each axis: its own range")
        bar = figure.colorbar(plt.cm.ScalarMappable(colours, cmap), ax=ax, label=metric)
        bar.ax.tick_params(labelsize=8)
        ax.set_title(f"{experiment}: the {len(trials)} trials that reached max_t, coloured by {metric}")
    return figure
