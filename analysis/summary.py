"""`study analyze`: load experiments, build the five tables, write Markdown + CSV + PNG, print."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from importlib import resources

import pandas as pd

from study import storage
from study.analysis import tables
from study.analysis.load import load_environment, load_experiments
from study.analysis.plots import learning_curves, plot_file_name


def load_reference() -> pd.DataFrame:
    with resources.files("study.analysis").joinpath("reference.csv").open() as f:
        return pd.read_csv(f)


def default_out(paths: Sequence[str]) -> str:
    """EXPERIMENT_DIR/analysis for one local experiment; ./study-analysis otherwise (e.g. s3://)."""
    if len(paths) == 1 and not storage.is_uri(paths[0]):
        return os.path.join(paths[0], "analysis")
    return os.path.abspath("study-analysis")


def fmt(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return value


def pct_pm(mean: float, std: float, low: float, high: float) -> str:
    """ "91.3 ± 1.2 % [89.8, 92.8]" (std and CI omitted when there is one seed)."""
    if math.isnan(mean):
        return ""
    text = f"{100 * mean:.1f}"
    if not math.isnan(std):
        text += f" ± {100 * std:.1f}"
    text += " %"
    if not math.isnan(low):  # an accuracy's CI is clipped to [0, 100] %
        text += f" [{100 * max(low, 0.0):.1f}, {100 * min(high, 1.0):.1f}]"
    return text


def display_per_variant(t: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for reading: accuracies as "mean ± std % [95% CI]"."""
    out = t[["experiment", "variant", "trials", "seeds"]].copy()
    out["final test_acc"] = [
        pct_pm(*r) for r in t[["final_test_acc", "final_std", "final_ci_low", "final_ci_high"]].itertuples(index=False)
    ]
    out["best test_acc"] = [
        pct_pm(*r) for r in t[["best_test_acc", "best_std", "best_ci_low", "best_ci_high"]].itertuples(index=False)
    ]
    out["epochs"] = t["epochs_run"].map("{:.1f}".format)
    out["ASHA-stopped"] = t["stopped_early"].map("{:.0%}".format)
    out["diverged"] = t["diverged"]
    out["train s"] = t["train_time_s"].map("{:.1f}".format)
    out["images/s"] = t["images_per_s"].map("{:.0f}".format)
    out["train-test gap"] = t["train_test_gap"].map(lambda gap: "" if math.isnan(gap) else f"{gap:+.3f}")
    return out


EMPTY = {  # what an empty table means, said where it is printed
    "against_report": "(none: the report states figures only for the experiments of search_spaces/report/; "
    "see analysis/reference.csv)",
    "effects": "(none: no variant to compare with a baseline)",
    "importance": "(none yet: fANOVA needs at least 2 trials that reached max_t)",
}


def write_table(df: pd.DataFrame, out: str, name: str, title: str, display: pd.DataFrame | None = None) -> str:
    """Write NAME.csv (raw numbers) and NAME.md (formatted); return the Markdown for printing."""
    os.makedirs(out, exist_ok=True)
    df.to_csv(os.path.join(out, f"{name}.csv"), index=False)
    shown = (display if display is not None else df).map(fmt)
    markdown = (
        f"## {title}\n\n" + (shown.to_markdown(index=False) if len(shown) else EMPTY.get(name, "(no rows)")) + "\n"
    )
    with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    return markdown


def summarize_experiments(
    paths: Sequence[str], out: str | None = None, plots: bool = True, pool: bool = False
) -> dict[str, pd.DataFrame]:
    """Build, write and print every table (and plot) for the experiments at `paths`."""
    frame = load_experiments(paths, pool=pool)
    out = out or default_out(paths)
    reference = load_reference()
    ran = set(frame["experiment"])
    built = {
        "per_variant": tables.per_variant(frame),
        "effects": tables.effects(frame),
        "against_report": tables.against_report(frame, reference[reference["experiment"].isin(ran)]),
        "compute": tables.compute(frame),
        "best_trials": tables.best_trials(frame),
    }
    titles = {
        "per_variant": "1. Per variant (mean ± std over its trials: its seeds, or a search's samples, the repeats of one configuration counted once; [95% CI])",
        "effects": "2. Ablation effects on test_acc at the last epoch both sides reached "
        "(Welch t-test over seeds; Holm-adjusted over each experiment's variants)",
        "against_report": "3. Against the report",
        "compute": "4. Compute, and what ASHA saved",
        "best_trials": "5. Best trials",
    }
    displays = {"per_variant": display_per_variant(built["per_variant"])}
    for name, table in built.items():
        print(write_table(table, out, name, titles[name], displays.get(name)))
    built.update(summarize_searches(frame, out, plots))
    frame.to_csv(os.path.join(out, "results.csv"), index=False)
    if plots:
        for experiment in frame["experiment"].unique():
            path = learning_curves(frame, experiment, os.path.join(out, plot_file_name(experiment)))
            print(f"learning curves: {path}")
    print_environments(paths)
    print(f"tables (Markdown + CSV): {out}")
    return built


def summarize_searches(frame: pd.DataFrame, out: str, plots: bool) -> dict[str, pd.DataFrame]:
    """For experiments that sample fields (random or Optuna search): best configurations,
    fANOVA importance, Optuna's slice and parallel-coordinate plots, and optuna.db."""
    from study.analysis import search

    searches = [group for _, group in frame.groupby("experiment", sort=False) if search.searched_fields(group)]
    if not searches:
        return {}
    best, importance = [], []
    for group in searches:
        study = search.optuna_study(group)
        best.append(search.best_configurations(group))
        importance.append(search.importances(study).assign(experiment=group["experiment"].iloc[0]))
        if plots:
            for path in search.search_plots(study, out, str(group["experiment"].iloc[0])):
                print(f"search plot: {path}")
    built = {
        "best_configurations": pd.concat(best, ignore_index=True),
        "importance": pd.concat(importance, ignore_index=True)[["experiment", "parameter", "importance"]],
    }
    titles = {
        "best_configurations": "Search: best configurations (metric at each trial's last epoch)",
        "importance": "Search: hyperparameter importance (Optuna's fANOVA, over trials that reached max_t)",
    }
    for name, table in built.items():
        print(write_table(table, out, name, titles[name]))
    path = search.write_study_file(searches, os.path.join(out, "optuna.db"))
    print(f"Optuna study (trials, states, per-epoch values): {path}; view it with `optuna-dashboard {path}`")
    return built


def print_environments(paths: Sequence[str]) -> None:
    """One line per experiment on what produced it, and what differs between them."""
    from study.environment import differences, summary

    envs = {p: load_environment(p) for p in paths}
    for path, env in envs.items():
        name = storage.basename(path)
        print(f"environment of {name}: " + (summary(env) if env else "not recorded (no environment.json)"))
        for record in (env or {}).get("resumes", []):
            print(f"  resumed {record.get('time')}: {summary(record)}")
    recorded = {storage.basename(p): e for p, e in envs.items() if e}
    differ = differences(recorded)
    if differ:
        print("warning: these experiments were made by different code or packages: " + "; ".join(differ))
