"""Ray Tune experiment folders -> one tidy DataFrame: a row per trial and epoch."""

from __future__ import annotations

import os
from typing import Iterable

import pandas as pd

from study.errors import StudyError, reason
from study.state_backup import repair_state
from study.trainable import META_KEY, VARIANT_KEY, trial_config

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "images_per_s",
    "diverged", "node_id", "pid", "timestamp", "time_this_iter_s", "time_total_s",
]  # fmt: skip


def load_experiment(path: str) -> pd.DataFrame:
    """Read one experiment folder (local or a pyarrow URI such as s3://) through Ray's own API.

    Works on finished, running and interrupted experiments: `ExperimentAnalysis` reads the
    experiment state and every trial's result.json as they are on disk now.
    """
    from ray import tune

    if "://" not in path:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise StudyError(f"{path}: no such experiment folder")
        repair_state(path)  # a state file cut short by a crash: back to the last good copy
    try:
        ea = tune.ExperimentAnalysis(path)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        raise StudyError(f"{path}: not a Ray Tune experiment folder ({reason(exc)})") from None
    frames = []
    for trial in ea.trials:
        results = ea.trial_dataframes.get(trial.trial_id)
        if results is None or results.empty or "epoch" not in results:
            continue  # a trial that has not reported yet
        frames.append(trial_frame(trial.trial_id, trial.status, trial.config, results, path))
    if not frames:
        raise StudyError(f"{path}: experiment has no trial results yet")
    # Variants in the order the file lists them, then trials in the order Tune created them.
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["variant_rank", "trial_id", "epoch"], kind="stable").reset_index(drop=True)


def trial_frame(trial_id: str, status: str, config: dict, results: pd.DataFrame, path: str) -> pd.DataFrame:
    meta = config.get(META_KEY) or {}
    resolved = trial_config(config).to_dict()  # defaults + file + variant: what the trial ran
    df = results[[c for c in METRIC_COLUMNS if c in results]].copy()
    # A resumed trial may report an epoch again; its last report for that epoch wins.
    df = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
    df.insert(0, "trial_id", trial_id)
    df.insert(0, "experiment", meta.get("experiment") or os.path.basename(path.rstrip("/")))
    df["experiment_path"] = path
    df["status"] = status
    df["variant"] = (config.get(VARIANT_KEY) or {}).get("name")
    order = list(meta.get("variants") or [])
    df["variant_rank"] = order.index(df["variant"].iloc[0]) if df["variant"].iloc[0] in order else len(order)
    df["baseline"] = meta.get("baseline")
    df["max_t"] = meta.get("max_t", resolved["epochs"])
    for key, value in resolved.items():
        df[f"config_{key}"] = value
    return df


def load_experiments(paths: Iterable[str]) -> pd.DataFrame:
    frame = pd.concat([load_experiment(p) for p in paths], ignore_index=True)
    return label_variants(frame)


def label_variants(frame: pd.DataFrame) -> pd.DataFrame:
    """Name each trial's variant: its YAML variant name, else the config fields that vary.

    Seeds are not part of a variant: trials that differ only by seed are repeats of one variant.
    """
    frame = frame.copy()
    for experiment, group in frame.groupby("experiment"):
        if group["variant"].notna().all():
            continue
        config_cols = [c for c in group if c.startswith("config_") and c != "config_seed"]
        varying = [c for c in config_cols if group[c].astype(str).nunique() > 1]
        labels = group[varying].astype(str).apply(
            lambda row: ",".join(f"{c[len('config_'):]}={v}" for c, v in row.items()) or "all", axis=1
        ) if varying else pd.Series("all", index=group.index)  # fmt: skip
        frame.loc[group.index, "variant"] = labels
    return frame
