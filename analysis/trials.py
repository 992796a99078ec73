"""One row per trial: test accuracy at its last epoch and at the epoch its metric chose, and what chose it.

Pure functions over the tidy frame (see `study.analysis.load`), read by the tables and by a search's
best configurations: `trial_summary` gives each trial's row; `measurements` and `at_trials` give one
value per configuration, its repeats (same configuration, same seed) averaged into one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def objective(frame: pd.DataFrame) -> tuple[str, str]:
    """(metric, mode) the experiment selects by (its file's `metric` and `mode`)."""
    metric = frame["metric"].dropna().iloc[0] if "metric" in frame and frame["metric"].notna().any() else "test_acc"
    mode = frame["mode"].dropna().iloc[0] if "mode" in frame and frame["mode"].notna().any() else "max"
    return str(metric), str(mode)


def selected_on(metric: str) -> str:
    """How a selection is labelled: by its metric, and as such when that metric reads the test set."""
    return f"{metric} (selected on test)" if metric.startswith("test_") else metric


def selected_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trial, the epoch its experiment's metric chose (best value; the earliest of ties), with
    test_acc there. The choice reads only that metric: the validation split unless the file says test."""
    rows = []
    for (experiment, trial_id), epochs in frame.groupby(["experiment", "trial_id"], sort=False):
        metric, mode = objective(epochs)
        values = epochs.set_index("epoch")[metric].dropna() if metric in epochs else pd.Series(dtype=float)
        if values.empty:
            rows.append((experiment, trial_id, math.nan, math.nan))
            continue
        epoch = values.idxmax() if mode == "max" else values.idxmin()
        test = epochs.loc[epochs["epoch"] == epoch, "test_acc"]
        rows.append((experiment, trial_id, float(epoch), float(test.iloc[0]) if len(test) else math.nan))
    return pd.DataFrame(rows, columns=["experiment", "trial_id", "selected_epoch", "selected_test_acc"])


def trial_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last epoch and test_acc there, the epoch its metric chose and test_acc
    there, and whether ASHA stopped it."""
    # The last epoch of each trial, kept in the frame's order (variants as the file lists them).
    last = (
        frame.sort_values("epoch", kind="stable").groupby(["experiment", "trial_id"], sort=False).tail(1).sort_index()
    )
    out = last.merge(selected_epochs(frame), on=["experiment", "trial_id"], how="left")
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


def at_trials(per_trial: pd.Series, trials: pd.DataFrame) -> pd.Series:
    """A per-trial_id value for each of `trials` that has one, repeats of a configuration as one."""
    values = pd.Series(per_trial.reindex(trials["trial_id"]).to_numpy(), index=trials.index)
    return measurements(trials, values.dropna())
