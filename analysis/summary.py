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
from study.analysis.report import Contents, Table, read_images, report_html


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
    """Table 1 for reading: accuracies as "mean ± std % [95% CI]", at one budget per row."""
    out = t[["experiment", "variant", "at_epoch", "n"]].copy()
    out["test_acc at at_epoch"] = [
        pct_pm(*r) for r in t[["test_acc", "test_std", "test_ci_low", "test_ci_high"]].itertuples(index=False)
    ]
    out["epoch chosen by"] = t["selected_on"]
    out["test_acc at that epoch"] = [
        pct_pm(*r)
        for r in t[["selected_test_acc", "selected_std", "selected_ci_low", "selected_ci_high"]].itertuples(index=False)
    ]
    out["ended before at_epoch"] = t["stopped_before"].fillna("")
    out["diverged"] = t["diverged"]
    out["train s"] = t["train_time_s"].map("{:.1f}".format)
    out["images/s"] = t["images_per_s"].map("{:.0f}".format)
    out["train-test gap"] = t["train_test_gap"].map(lambda gap: "" if math.isnan(gap) else f"{gap:+.3f}")
    return out


def display_effects(t: pd.DataFrame) -> pd.DataFrame:
    """Table 2 for reading: the difference and its CI in percentage points, one decimal."""
    out = t[["experiment", "variant", "baseline", "at_epoch", "n", "n_baseline"]].copy()
    out["difference (pp) [95% CI]"] = [
        "" if math.isnan(d) else f"{d:+.1f}" + ("" if math.isnan(lo) else f" [{lo:+.1f}, {hi:+.1f}]")
        for d, lo, hi in t[["diff_pp", "ci_low_pp", "ci_high_pp"]].itertuples(index=False)
    ]
    for column in ("hedges_g", "t", "df", "p_value", "p_holm", "family", "verdict"):
        out[column] = t[column]
    return out


EMPTY = {  # what an empty table means, said where it is printed
    "against_report": "(none: the report states figures only for the experiments of search_spaces/report/; "
    "their figures are in reference.csv, shipped with study as study/analysis/reference.csv)",
    "effects": "(none: no variant to compare with a baseline)",
    "importance": "(none)",
}


def write_table(
    df: pd.DataFrame,
    out: str,
    name: str,
    title: str,
    display: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    contents: Contents | None = None,
) -> str:
    """Write NAME.csv (raw numbers) and NAME.md (formatted, then `notes`, one a line, which stand in
    for an empty table); add the same to `contents` for the report; return the Markdown for printing."""
    storage.write_file(os.path.join(out, f"{name}.csv"), df.to_csv(index=False))
    shown = (display if display is not None else df).map(fmt)
    if contents is not None:
        contents.tables.append(Table(title, shown, tuple(notes), EMPTY.get(name, "(no rows)")))
    if len(shown):
        body = [shown.to_markdown(index=False)]
    else:
        body = [] if notes else [EMPTY.get(name, "(no rows)")]
    if notes:
        body.append("\n".join(notes))
    markdown = f"## {title}\n\n" + "\n\n".join(body) + "\n"
    storage.write_file(os.path.join(out, f"{name}.md"), markdown)
    return markdown


def summarize_experiments(
    paths: Sequence[str], out: str | None = None, plots: bool = True, pool: bool = False, echo: bool = True
) -> dict[str, pd.DataFrame]:
    """Build, write and print every table (and plot) for the experiments at `paths`."""
    # --out is the user's own choice of folder; the default inside an experiment is made without
    # following a link planted there (every file in it is then written by storage.write_file).
    root = out or os.path.dirname(default_out(paths))
    flag = "--out" if out else "the tables' folder (the default of --out)"
    out = out or default_out(paths)
    storage.check_no_symlink(root, out)
    storage.check_writable(out, flag)  # before the reading: a read-only folder is one line at once
    frame = load_experiments(paths, pool=pool)
    storage.make_folder(root, out)
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
        "per_variant": "1. Per variant, at one budget each (at_epoch: the most epochs its trials ran; means over "
        "the trials that reached it, each configuration once, n; mean ± std % [95% CI]; trials that ended sooner "
        "are counted beside, not averaged)",
        "effects": "2. Ablation effects on test_acc at the last epoch both sides reached, in percentage points "
        "(Welch's t-test and CI; Hedges' g; p Holm-adjusted over each experiment's comparisons with its "
        "baseline, `family` of them; a verdict needs 3 seeds per arm)",
        "against_report": "3. Against the report",
        "compute": "4. Compute, and what ASHA saved",
        "best_trials": "5. Best trials (ranked by the file's metric at their last epoch, `selected_on`; "
        "test_acc there and at the epoch that metric chose)",
    }
    displays = {
        "per_variant": display_per_variant(built["per_variant"]),
        "effects": display_effects(built["effects"]),
    }
    contents = Contents()
    notes = {"per_variant": per_variant_notes(built["per_variant"])}
    for name, table in built.items():
        markdown = write_table(
            table, out, name, titles[name], displays.get(name), notes=notes.get(name, ()), contents=contents
        )
        if echo:  # `study run --quiet` writes the tables and says where
            print(markdown)
    built.update(summarize_searches(frame, out, plots, contents, echo))
    storage.write_file(os.path.join(out, "results.csv"), frame.to_csv(index=False))
    if plots:
        for experiment in frame["experiment"].unique():
            path = learning_curves(frame, experiment, os.path.join(out, plot_file_name(experiment)))
            contents.images.append(path)
            if echo:
                print(f"learning curves: {path}")
    environments = environment_lines(paths)
    print("\n".join(environments))
    note = unsigned_note(frame)
    if note:
        print(note)
    page = report_html(
        [str(e) for e in frame["experiment"].unique()],
        environments + ([note] if note else []),
        os.path.abspath(out),
        contents.tables,
        read_images(sorted(contents.images, key=lambda p: not os.path.basename(p).startswith("curves_"))),
    )
    storage.write_file(os.path.join(out, "report.html"), page)
    print(f"tables (Markdown + CSV): {out}")
    print(f"report (one page, tables and plots): {os.path.join(out, 'report.html')}")
    return built


def per_variant_notes(t: pd.DataFrame) -> list[str]:
    """What a row's mean at at_epoch stands for when trials ended before it (under ASHA)."""
    if t.empty or not t["stopped_before"].fillna("").astype(bool).any():
        return []
    return [
        "Where trials ended before at_epoch (ASHA stopped them), the mean at at_epoch is over the trials "
        "that were kept, the better ones at each rung: it leans high, and rests on n configurations. Compare "
        "variants in table 2 (one epoch that all reached), or run with --scheduler fifo for every trial to the end."
    ]


def unsigned_note(frame: pd.DataFrame) -> str | None:
    """A line naming how many trials' numbers are not signed by this user's key, if any."""
    if "signed" not in frame:
        return None
    trials = frame.groupby(["experiment", "trial_id"])["signed"].all()
    if trials.all():
        return None
    return (
        f"note: {(~trials).sum()} of {len(trials)} trials' results are not signed by your key (another user's "
        "run, changed since, or still running): their numbers are as the folder says; see `signed` in "
        "results.csv and best_trials"
    )


def summarize_searches(
    frame: pd.DataFrame, out: str, plots: bool, contents: Contents | None = None, echo: bool = True
) -> dict[str, pd.DataFrame]:
    """For experiments that sample fields (random or Optuna search): best configurations,
    importance (as optuna-dashboard computes it), slice and parallel-coordinate plots, and optuna.db.
    Tables and plots are added to `contents` for the report."""
    from study.analysis import search
    from study.analysis.importance import importance_note, importances
    from study.analysis.search_plots import search_plots

    searches = [group for _, group in frame.groupby("experiment", sort=False) if search.searched_fields(group)]
    if not searches:
        return {}
    best, importance, notes = [], [], []
    for group in searches:
        study = search.optuna_study(group)
        best.append(search.best_configurations(group))
        importance.append(importances(study).assign(experiment=group["experiment"].iloc[0]))
        note = importance_note(study)
        if note:
            notes.append(f"{group['experiment'].iloc[0]}: {note}")
        if plots:
            for path in search_plots(study, out, str(group["experiment"].iloc[0])):
                if contents is not None:
                    contents.images.append(path)
                if echo:
                    print(f"search plot: {path}")
    built = {
        "best_configurations": pd.concat(best, ignore_index=True),
        "importance": pd.concat(importance, ignore_index=True)[["experiment", "parameter", "importance", "n_trials"]],
    }
    titles = {
        "best_configurations": "Search: best configurations (metric at each trial's last epoch)",
        "importance": "Search: hyperparameter importance (Optuna's PED-ANOVA, as optuna-dashboard computes it, "
        "over the n_trials trials that reached max_t)",
    }
    for name, table in built.items():
        markdown = write_table(
            table, out, name, titles[name], notes=notes if name == "importance" else (), contents=contents
        )
        if echo:
            print(markdown)
    path = search.write_study_file(searches, os.path.join(out, "optuna.db"))
    print(
        f"Optuna study (trials, states, per-epoch values): {path}; view it with "
        f"`optuna-dashboard sqlite:///{os.path.abspath(path)}`"
    )
    return built


def environment_lines(paths: Sequence[str]) -> list[str]:
    """One line per experiment on what produced it, and what differs between them."""
    from study.environment import differences, summary

    lines = []
    envs = {p: load_environment(p) for p in paths}
    for path, env in envs.items():
        name = storage.basename(path)
        lines.append(f"environment of {name}: " + (summary(env) if env else "not recorded (no environment.json)"))
        for record in (env or {}).get("resumes", []):
            lines.append(f"  resumed {record.get('time')}: {summary(record)}")
    recorded = {storage.basename(p): e for p, e in envs.items() if e}
    differ = differences(recorded)
    if differ:
        lines.append("warning: these experiments were made by different code or packages: " + "; ".join(differ))
    return lines
