"""The five tables (per variant, effects, against the report, compute, best trials). Pure functions: a tidy frame (see `analysis.load`) in, a frame out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.stats import holm, mean_ci, welch
from study.analysis.trials import at_trials, measurements, objective, selected_on, trial_summary

ROUNDING = 0.005  # the report prints whole percent: "42 %" stands for [41.5 %, 42.5 %]


def stopped_before(trials: pd.DataFrame, epoch: int) -> str:
    """ "2 (at 2, 4)": the trials that ended before `epoch` and where; "" when none did."""
    early = sorted(int(e) for e in trials.loc[trials["epochs_run"] < epoch, "epochs_run"])
    return f"{len(early)} (at {', '.join(map(str, early))})" if early else ""


def per_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: each variant at one budget, `at_epoch` (the most epochs any of its trials ran).

    Its means are over the trials that reached that epoch, each configuration once (`n`); trials
    that ended sooner (ASHA stops, divergence) are counted beside the mean, never averaged into
    it. Test accuracy is given at `at_epoch`, and at the epoch each trial's metric chose.
    """
    rows = []
    for (experiment, variant), trials_of_variant in trial_summary(frame).groupby(["experiment", "variant"], sort=False):
        at_epoch = int(trials_of_variant["epochs_run"].max())
        reached = trials_of_variant[trials_of_variant["epochs_run"] >= at_epoch]
        final = measurements(reached, reached["final_test_acc"])
        test, selected = mean_ci(final), mean_ci(measurements(reached, reached["selected_test_acc"]))
        metric, _ = objective(frame[frame["experiment"] == experiment])
        rows.append(
            {
                "experiment": experiment,
                "variant": variant,
                "at_epoch": at_epoch,
                "trials": len(trials_of_variant),
                "seeds": trials_of_variant["config_seed"].nunique(),
                "n": len(final),
                "stopped_before": stopped_before(trials_of_variant, at_epoch),
                "test_acc": test[0],
                "test_std": test[1],
                "test_ci_low": test[2],
                "test_ci_high": test[3],
                "selected_on": selected_on(metric),
                "selected_test_acc": selected[0],
                "selected_std": selected[1],
                "selected_ci_low": selected[2],
                "selected_ci_high": selected[3],
                "selected_epoch": reached["selected_epoch"].mean(),
                "diverged": int(trials_of_variant["diverged"].sum()),
                "train_time_s": reached["time_total_s"].mean(),
                "images_per_s": trials_of_variant["images_per_s"].mean(),
                "train_test_gap": reached["gap"].mean(),
            }
        )
    return pd.DataFrame(rows)


MIN_SEEDS = 3  # per arm, for a verdict: with 2, one unlucky seed decides the t-test


def effects(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Table 2: each variant's test accuracy minus its experiment's baseline, in percentage points.

    Both sides are read at the same epoch: the last one that every trial of the two reached.
    Under ASHA a stopped variant would otherwise be compared at epoch 1 against a baseline at
    epoch 20, and the "effect" would measure training time, not the ablation. The difference
    has Welch's CI, t and df, Hedges' g, and a p-value Holm-adjusted over the experiment's
    comparisons with its baseline (`family`); a verdict needs MIN_SEEDS configurations per arm.
    """
    trials = trial_summary(frame)
    rows = []
    for experiment, trials_of_experiment in trials.groupby("experiment", sort=False):
        epoch_rows = frame[frame["experiment"] == experiment]
        baseline = (
            trials_of_experiment["baseline"].dropna().iloc[0]
            if trials_of_experiment["baseline"].notna().any()
            else trials_of_experiment["variant"].iloc[0]
        )
        base_trials = trials_of_experiment[trials_of_experiment["variant"] == baseline]
        for variant, variant_trials in trials_of_experiment.groupby("variant", sort=False):
            if variant == baseline or base_trials.empty:
                continue
            epoch = int(min(variant_trials["epochs_run"].min(), base_trials["epochs_run"].min()))
            at = epoch_rows[epoch_rows["epoch"] == epoch].set_index("trial_id")["test_acc"]
            values, base = at_trials(at, variant_trials), at_trials(at, base_trials)
            w = welch(100 * values.to_numpy(), 100 * base.to_numpy())
            rows.append(
                {
                    "experiment": experiment,
                    "variant": variant,
                    "baseline": baseline,
                    "at_epoch": epoch,
                    "n": len(values),
                    "n_baseline": len(base),
                    "diff_pp": w.diff,
                    "ci_low_pp": w.ci_low,
                    "ci_high_pp": w.ci_high,
                    "hedges_g": w.hedges_g,
                    "t": w.t,
                    "df": w.df,
                    "p_value": w.p_value,
                }
            )
    columns = ["experiment", "variant", "baseline", "at_epoch", "n", "n_baseline", "diff_pp", "ci_low_pp"]
    table = pd.DataFrame(rows, columns=[*columns, "ci_high_pp", "hedges_g", "t", "df", "p_value"])
    return holm_verdicts(table, alpha)


def holm_verdicts(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Add p_holm and its family size per experiment (its comparisons with a p-value), and verdicts."""
    table = table.copy()
    table["p_holm"], table["family"], table["verdict"] = np.nan, 0, ""
    for _, group in table.groupby("experiment", sort=False):
        table.loc[group.index, "p_holm"] = holm(group["p_value"])
        table.loc[group.index, "family"] = int(group["p_value"].notna().sum())
    for i, row in table.iterrows():
        fewest = min(row["n"], row["n_baseline"])
        direction = "better" if row["diff_pp"] > 0 else "worse"
        if fewest < MIN_SEEDS:
            verdict = f"too few seeds (n = {fewest}; a verdict needs {MIN_SEEDS} per arm)"
        elif math.isnan(row["p_holm"]):  # no spread on either side: a t-test is undefined
            verdict = "identical" if row["diff_pp"] == 0 else f"{direction} (no spread across seeds)"
        elif row["p_holm"] < alpha:
            verdict = f"{direction} (Holm p < {alpha})"
        else:
            verdict = f"no clear effect (Holm p >= {alpha})"
        table.at[i, "verdict"] = verdict
    return table


def measured_values(trials: pd.DataFrame, frame: pd.DataFrame, metric: str, epoch: float) -> pd.Series:
    """Values of a reference metric, one per configuration: at `epoch`, or the peak over epochs."""
    if metric == "peak_test_acc":
        return at_trials(frame.groupby("trial_id")["test_acc"].max(), trials)
    at = frame[frame["epoch"] == int(epoch)]
    return at_trials(at.set_index("trial_id")[metric], trials)


def not_comparable(trials: pd.DataFrame, ref: Any) -> str:
    """What sets our trials apart from the report's setting ("dataset digits, report cifar100"), or ""."""
    if trials.empty:
        return ""
    wanted = {"dataset": ref.dataset} if isinstance(getattr(ref, "dataset", None), str) else {}
    fields = getattr(ref, "fields", None)
    for item in fields.split(";") if isinstance(fields, str) else []:
        key, _, value = item.partition("=")
        wanted[key] = value
    differ = []
    for key, value in wanted.items():
        ours = sorted({str(v).lower() for v in trials[f"config_{key}"]}) if f"config_{key}" in trials else ["?"]
        if ours != [str(value).lower()] and not _same_number(ours, value):
            differ.append(f"{key} {'/'.join(ours)}, report {value}")
    return "; ".join(differ)


def _same_number(ours: list[str], value: str) -> bool:
    try:
        return len(ours) == 1 and float(ours[0]) == float(value)
    except ValueError:
        return False


def against_report(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Table 3: every figure the report states beside our mean and CI, with a verdict.

    reproduced: the CI (or the single value) meets the report's rounding interval;
    higher / lower: it lies wholly above / below; not run: no trial of that variant reached it;
    not comparable: our trials differ from the report's setting (dataset, or a field that
    reference.csv names), so no verdict is given.
    """
    trials = trial_summary(frame)
    rows = []
    for ref in reference.itertuples(index=False):
        mask = (trials["experiment"] == ref.experiment) & (trials["variant"] == ref.variant)
        ids = trials.loc[mask, "trial_id"]
        sub = frame[frame["trial_id"].isin(ids) & (frame["experiment"] == ref.experiment)]
        values = measured_values(trials[mask], sub, ref.metric, ref.epoch) if len(ids) else pd.Series(dtype=float)
        mean, std, low, high = mean_ci(values)
        tol = ROUNDING if "acc" in ref.metric else 0.0005  # losses are printed to 3 decimals
        mismatch = not_comparable(trials[mask], ref)
        if mismatch:
            verdict = f"not comparable ({mismatch})"
        elif len(values) == 0:
            verdict = "not run"
        else:
            lo, hi = (low, high) if len(values) >= 2 else (mean, mean)
            if hi < ref.value - tol:
                verdict = "lower"
            elif lo > ref.value + tol:
                verdict = "higher"
            else:
                verdict = "reproduced"
        rows.append(
            {
                "experiment": ref.experiment,
                "variant": ref.variant,
                # The report's peak is a maximum over epochs of test accuracy: ours is measured the same way.
                "metric": f"{ref.metric} (selected on test)" if ref.metric == "peak_test_acc" else ref.metric,
                "epoch": ref.epoch,
                "report": ref.value,
                "measured": mean,
                "ci_low": low,
                "ci_high": high,
                "n": len(values),
                "verdict": verdict,
                "passage": ref.passage,
            }
        )
    columns = ["experiment", "variant", "metric", "epoch", "report", "measured", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=[*columns, "verdict", "passage"])  # a header even with no rows


def wall_time(rows: pd.DataFrame) -> float:
    """Seconds from the first trial's start to the last result, summed over the run and each resume
    (`session`): the pause between a stop and its resume is not counted."""
    if "session" not in rows or "time_this_iter_s" not in rows:
        return float(rows["timestamp"].max() - (rows["timestamp"] - rows["time_total_s"]).min())
    by_session = rows["session"]
    first_start = (rows["timestamp"] - rows["time_this_iter_s"]).groupby(by_session).min()
    return float((rows["timestamp"].groupby(by_session).max() - first_start).sum())


def nodes_used(rows: pd.DataFrame) -> int:
    """Ray nodes that trained, in the session that used the most: a resume starts a new Ray, whose
    nodes have new ids, so counting ids over the whole run would count this machine twice."""
    if "node_id" not in rows:
        return 1
    if "replayed" in rows:  # an epoch reported again after a crash names the node of its first run
        rows = rows[~rows["replayed"].eq(True)]  # True on replayed rows, NaN on the rest
    if "session" not in rows:
        return max(int(rows["node_id"].nunique()), 1)
    return max(int(rows.groupby("session")["node_id"].nunique().max()), 1) if len(rows) else 1


def compute(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 4: trial-epochs spent, wall time, and the epochs ASHA saved against running all to max_t."""
    trials = trial_summary(frame)
    rows = []
    for experiment, trials_of_experiment in trials.groupby("experiment", sort=False):
        epoch_rows = frame[frame["experiment"] == experiment]
        planned_each = np.minimum(trials_of_experiment["config_epochs"], trials_of_experiment["max_t"])
        planned, spent = int(planned_each.sum()), int(trials_of_experiment["epochs_run"].sum())
        # Saved: the epochs ASHA stopped trials before. A trial still running (an analysis during
        # the run, or of a stopped run) has saved nothing yet; a failed or diverged one, not by ASHA.
        stopped = trials_of_experiment["stopped_early"]
        saved = int((planned_each - trials_of_experiment["epochs_run"])[stopped].sum())
        rows.append(
            {
                "experiment": experiment,
                "trials": len(trials_of_experiment),
                "nodes": nodes_used(epoch_rows),
                "trial_epochs": spent,
                "planned_epochs": planned,
                "asha_saved_epochs": saved,
                "saved_share": saved / planned if planned else math.nan,
                "stopped_early": int(trials_of_experiment["stopped_early"].sum()),
                "diverged": int(trials_of_experiment["diverged"].sum()),
                "wall_time_s": wall_time(epoch_rows),
                "trial_time_s": float(trials_of_experiment["time_total_s"].sum()),
            }
        )
    return pd.DataFrame(rows)


def best_trials(frame: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The best trials by their experiment's metric and mode at their last epoch (as `study export`
    and Tune's get_best_result choose), with test accuracy there and at the epoch the metric chose."""
    trials = trial_summary(frame)
    picked = []
    for experiment, group in trials.groupby("experiment", sort=False):
        metric, mode = objective(frame[frame["experiment"] == experiment])
        value = group[metric] if metric in group else group["final_test_acc"] if metric == "test_acc" else np.nan
        picked.append(
            group.assign(selected_on=selected_on(metric), value=value, rank_key=value * (1 if mode == "max" else -1))
        )
    trials = pd.concat(picked)
    cols = [
        "experiment",
        "trial_dir",  # the folder name `study export --trial` takes
        "variant",
        "config_seed",
        "epochs_run",
        "selected_on",
        "value",  # the metric it is ranked by, at its last epoch
        "final_test_acc",
        "selected_epoch",
        "selected_test_acc",
        "train_loss",
        "status",
        "signed",  # its results are as this user's own run signed them (see study.trust.signing)
    ]
    cols = [c for c in cols if c in trials]
    ranked = trials.sort_values(
        ["rank_key", "trial_dir" if "trial_dir" in trials else "trial_id"], ascending=[False, True], kind="stable"
    )  # ties: as `study export` breaks them
    return ranked[cols].head(top).reset_index(drop=True)
