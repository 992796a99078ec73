"""The five tables (per variant, effects, against the report, compute, best trials). Pure functions: a tidy frame (see `analysis.load`) in, a frame out."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ROUNDING = 0.005  # the report prints whole percent: "42 %" stands for [41.5 %, 42.5 %]


def mean_ci(values: pd.Series | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean, std and Student-t confidence interval of the mean. CI is NaN with fewer than 2 values."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return (math.nan,) * 4
    mean = float(finite.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def trial_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last epoch, final and best test_acc, and whether ASHA stopped it."""
    # The last epoch of each trial, kept in the frame's order (variants as the file lists them).
    last = (
        frame.sort_values("epoch", kind="stable").groupby(["experiment", "trial_id"], sort=False).tail(1).sort_index()
    )
    best = frame.groupby(["experiment", "trial_id"])["test_acc"].max().rename("best_test_acc")
    out = last.set_index(["experiment", "trial_id"]).join(best).reset_index()
    out = out.rename(columns={"test_acc": "final_test_acc", "epoch": "epochs_run"})
    out["diverged"] = out["diverged"].astype(bool)
    finished = out["status"].isin(["TERMINATED"])
    out["stopped_early"] = finished & ~out["diverged"] & (out["epochs_run"] < out["config_epochs"])
    # Overfitting at the last epoch: train accuracy in eval mode without augmentation (a fixed
    # train subset, measured as the test split is) minus test accuracy. Runs from before that
    # metric existed get NaN rather than the running, augmented train_acc, which misleads.
    eval_acc = out["train_eval_acc"] if "train_eval_acc" in out else pd.Series(np.nan, index=out.index)
    out["gap"] = eval_acc - out["final_test_acc"]
    return out


def measurements(trials: pd.DataFrame, values: pd.Series) -> pd.Series:
    """`values` (indexed like `trials`) with the repeats of one configuration averaged into one.

    Trials with the same configuration, seed included (num_samples over a space that samples
    nothing, say), are one measurement taken again, not more seeds: counted apart, they would
    narrow the error bars without new evidence. The mean, CI and t-tests count each once.
    """
    columns = sorted(c for c in trials.columns if c.startswith("config_"))
    if not columns:
        return values
    key = trials[columns].apply(lambda column: column.map(str)).agg("\x1f".join, axis=1)  # NaN as "nan"
    return values.groupby(key.reindex(values.index), sort=False).mean()


def per_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: each variant across its seeds (or a search's samples); `n` counts configurations."""
    rows = []
    for (experiment, variant), trials_of_variant in trial_summary(frame).groupby(["experiment", "variant"], sort=False):
        finals = measurements(trials_of_variant, trials_of_variant["final_test_acc"])
        final = mean_ci(finals)
        best = mean_ci(measurements(trials_of_variant, trials_of_variant["best_test_acc"]))
        rows.append(
            {
                "experiment": experiment,
                "variant": variant,
                "trials": len(trials_of_variant),
                "seeds": trials_of_variant["config_seed"].nunique(),
                "n": len(finals),
                "final_test_acc": final[0],
                "final_std": final[1],
                "final_ci_low": final[2],
                "final_ci_high": final[3],
                "best_test_acc": best[0],
                "best_std": best[1],
                "best_ci_low": best[2],
                "best_ci_high": best[3],
                "epochs_run": trials_of_variant["epochs_run"].mean(),
                "stopped_early": trials_of_variant["stopped_early"].mean(),
                "diverged": int(trials_of_variant["diverged"].sum()),
                "train_time_s": trials_of_variant["time_total_s"].mean(),
                "images_per_s": trials_of_variant["images_per_s"].mean(),
                "train_test_gap": trials_of_variant["gap"].mean(),
            }
        )
    return pd.DataFrame(rows)


def effects(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Table 2: each variant's test_acc minus its experiment's baseline, Welch t-test over seeds.

    Both sides are read at the same epoch: the last one that every trial of the two reached.
    Under ASHA a stopped variant would otherwise be compared at epoch 1 against a baseline at
    epoch 20, and the "effect" would measure training time, not the ablation.
    """
    trials = trial_summary(frame)
    columns = ["experiment", "variant", "baseline", "at_epoch", "n", "n_baseline", "effect", "p_value", "verdict"]
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
            values = at_trials(at, variant_trials)
            base = at_trials(at, base_trials)
            diff = values.mean() - base.mean() if len(values) and len(base) else math.nan
            if len(values) < 2 or len(base) < 2:
                p_value, verdict = math.nan, f"too few seeds to tell ({len(values)} vs {len(base)}; need >= 2 each)"
            elif values.max() == values.min() and base.max() == base.min():  # no spread: a t-test is undefined
                p_value = math.nan
                verdict = "identical" if diff == 0 else f"{'better' if diff > 0 else 'worse'} (no spread across seeds)"
            else:
                with warnings.catch_warnings():
                    # One side without spread (every seed scored the same): scipy warns of precision
                    # loss in its variance, which is exactly 0; Welch's test is defined by the other.
                    warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
                    p_value = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
                if p_value < alpha:
                    verdict = f"{'better' if diff > 0 else 'worse'} (p < {alpha})"
                else:
                    verdict = f"no clear effect (p >= {alpha})"
            rows.append(
                dict(
                    zip(
                        columns,
                        [experiment, variant, baseline, epoch, len(values), len(base), diff, p_value, verdict],
                        strict=True,
                    )
                )
            )
    table = pd.DataFrame(rows, columns=columns)
    return holm_verdicts(table, alpha)


def at_trials(per_trial: pd.Series, trials: pd.DataFrame) -> pd.Series:
    """A per-trial_id value for each of `trials` that has one, repeats of a configuration as one."""
    values = pd.Series(per_trial.reindex(trials["trial_id"]).to_numpy(), index=trials.index)
    return measurements(trials, values.dropna())


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjustment: controls the chance of any false "better/worse" in a family."""
    p = p_values.dropna().sort_values()
    m = len(p)
    adjusted = (p * (m - np.arange(m))).cummax().clip(upper=1.0)
    return adjusted.reindex(p_values.index)


def holm_verdicts(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Add p_holm per experiment (its variants against the baseline are one family); verdicts use it."""
    table = table.copy()
    table.insert(table.columns.get_loc("p_value") + 1, "p_holm", np.nan)
    for _, group in table.groupby("experiment", sort=False):
        table.loc[group.index, "p_holm"] = holm(group["p_value"])
    for i, row in table.iterrows():
        if not math.isnan(row["p_holm"]):
            direction = "better" if row["effect"] > 0 else "worse"
            table.at[i, "verdict"] = (
                f"{direction} (Holm p < {alpha})" if row["p_holm"] < alpha else f"no clear effect (Holm p >= {alpha})"
            )
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
                "metric": ref.metric,
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


def best_trials(frame: pd.DataFrame, metric: str = "test_acc", top: int = 10) -> pd.DataFrame:
    """The best trials by their best `metric` (higher is better for accuracies)."""
    trials = trial_summary(frame)
    cols = [
        "experiment",
        "trial_dir",  # the folder name `study export --trial` takes
        "variant",
        "config_seed",
        "epochs_run",
        "best_test_acc",
        "final_test_acc",
        "train_loss",
        "status",
        "signed",  # its results are as this user's own run signed them (see study.signing)
    ]
    ascending = "loss" in metric
    key = "best_test_acc" if metric == "test_acc" else metric
    cols = [c for c in cols if c in trials]
    return trials.sort_values(key, ascending=ascending)[cols].head(top).reset_index(drop=True)
