"""Ray Tune experiment folders -> one tidy DataFrame: a row per trial and epoch."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from study import storage
from study.checkpoints.files import config_key
from study.config import TrialConfig, variant_name
from study.errors import StudyError, reason
from study.models import model_fields
from study.names import META_KEY
from study.trust.experiment_state import STATE_GLOB, state_to_read, trial_states

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "train_eval_loss",
    "train_eval_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "epoch_time_s",
    "images_per_s",
    "diverged",
    "node_id",
    "pid",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "replayed",  # reported again after a crash, from the checkpoint's record (see study.trust.recovery)
    # What the epoch cost beyond training (see docs/performance.md):
    "data_s",
    "device",
    "threads",
    "rss_mb",
    "rss_anon_mb",
    "peak_rss_mb",
    "checkpoint_s",  # only where the epoch wrote a checkpoint
    "checkpoint_mb",
    "expected_checkpoint_s",
    "checkpoint_probe_s",
]


def load_experiment(path: str) -> pd.DataFrame:
    """Read one experiment folder (local or a pyarrow URI such as s3://) from its JSON files.

    Works on finished, running and interrupted experiments, and on folders someone else wrote:
    it reads each trial's params.json and result.json and the statuses in Tune's
    experiment_state-*.json, all as JSON. Ray's pickles (tuner.pkl, params.pkl, the pickled
    fields of the state) are never opened, Ray is not imported, and nothing in the folder is
    written: a read-only folder reads the same. Each row says whether its trial's results are
    signed by this user's key (`signed`, see `study.trust.signing`).
    """
    from study.trust import signing

    path = storage.normalize(path)
    if not storage.is_uri(path):
        if not os.path.isdir(path):
            raise StudyError(f"{path}: no such experiment folder")
    entries = storage.list_dir(path)
    states = [name for name, is_dir in entries if not is_dir and fnmatch.fnmatch(name, STATE_GLOB)]
    if not states:
        raise StudyError(f"{path}: not a Ray Tune experiment folder (no {STATE_GLOB} in it)")
    # Read only: a state cut short by a crash is read from the backup copy, not restored.
    tune_state = trial_states(storage.join(path, states[-1]) if storage.is_uri(path) else state_to_read(path))
    key = signing.existing_key()
    frames = []
    for name, is_dir in entries:
        trial_dir = storage.join(path, name)
        if not is_dir or not storage.is_file(storage.join(trial_dir, "params.json")):
            continue
        if tune_state and name not in tune_state:
            # A trial started after Tune's last state save, before a crash: on resume its
            # configuration runs again as a trial Tune knows. Counting both would count it twice.
            continue
        state = tune_state.get(name, {})
        results = read_results(storage.join(trial_dir, "result.json"))
        if results.empty and "epoch" in state.get("last_result", {}):
            # The driver was killed before it flushed result.json: Tune's state still holds the
            # trial's last result, so at least its newest epoch counts.
            results = pd.DataFrame([state["last_result"]])
        if results.empty or "epoch" not in results:
            continue  # a trial that has not reported yet
        trial_id = str(results["trial_id"].iloc[-1]) if "trial_id" in results else str(state.get("trial_id", name))
        params = storage.join(trial_dir, "params.json")
        config = read_json(params)
        if not isinstance(config, dict) or not isinstance(config.get(META_KEY, {}), dict):
            raise StudyError(f"{params}: expected the trial's config as a JSON object")
        if "config_key" in results:  # rows another config wrote under this folder name are not its
            results = results[results["config_key"].isna() | (results["config_key"] == config_key(config))]
            if results.empty:
                continue
        status = state.get("status") or (
            "ERROR" if storage.is_file(storage.join(trial_dir, "error.txt")) else "UNKNOWN"
        )
        frame = trial_frame(trial_id, status, config, results, path, params)
        frame["trial_dir"] = name  # the trial's folder in the experiment, for export
        frame["signed"] = signing.results_signed(trial_dir, key)  # its numbers are this user's own
        frames.append(frame)
    if not frames:
        raise StudyError(f"{path}: experiment has no trial results yet")
    # Variants in the order the file lists them, then trials in the order Tune created them.
    frame = pd.concat(frames, ignore_index=True)
    if "timestamp" in frame:
        frame["session"] = session_of(frame["timestamp"], session_starts(path))
    return frame.sort_values(["variant_rank", "trial_id", "epoch"], kind="stable").reset_index(drop=True)


def read_json(uri: str) -> Any:
    try:
        return json.loads(storage.read_text(uri))
    except (OSError, ValueError) as exc:
        raise StudyError(f"{uri}: unreadable JSON ({reason(exc)})") from None


def read_results(uri: str) -> pd.DataFrame:
    """A trial's result.json: one JSON object per line, one line per reported epoch."""
    if not storage.is_file(uri):
        return pd.DataFrame()
    return pd.DataFrame(storage.json_lines(storage.read_text(uri)))


def trial_frame(
    trial_id: str, status: str, config: dict, results: pd.DataFrame, path: str, source: str = "trial config"
) -> pd.DataFrame:
    meta = config.get(META_KEY) or {}
    resolved = TrialConfig.from_tune(config, source).to_dict()  # defaults + file + variant: what the trial ran
    df = results[[c for c in METRIC_COLUMNS if c in results]].copy()
    # A resumed trial may report an epoch again; its last report for that epoch wins.
    df = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
    df.insert(0, "trial_id", trial_id)
    df.insert(0, "experiment", str(meta.get("experiment") or storage.basename(path)))
    df["experiment_path"] = path
    df["status"] = status
    df["variant"] = variant_name(config)
    order = list(meta.get("variants") or [])
    df["variant_rank"] = order.index(df["variant"].iloc[0]) if df["variant"].iloc[0] in order else len(order)
    df["baseline"] = meta.get("baseline")
    df["metric"] = meta.get("metric", "test_acc")  # what the file ranks trials by, and how
    df["mode"] = meta.get("mode", "max")
    df["searched"] = json.dumps(meta.get("searched") or {})  # sampled fields and their domains
    df["max_t"] = meta.get("max_t", resolved["epochs"])
    unread = {key for key, models in model_fields().items() if resolved["model"] not in models}
    for key, value in resolved.items():
        df[f"config_{key}"] = None if key in unread else value  # only the fields its model reads
    return df


def session_starts(path: str) -> list[float]:
    """When the run and each of its resumes began (environment.json), in epoch seconds; [] if not recorded."""
    import datetime as dt

    env = load_environment(path) or {}
    resumes = env.get("resumes") if isinstance(env.get("resumes"), list) else []
    starts = []
    for record in [env, *resumes]:
        try:
            starts.append(dt.datetime.fromisoformat(record["time"]).timestamp())
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(starts)


def session_of(timestamps: pd.Series, starts: list[float]) -> pd.Series:
    """Which Ray session (0 = the run, 1 = its first resume, ...) reported each row."""
    import numpy as np

    index = np.searchsorted(np.asarray(starts, dtype=float), timestamps.to_numpy(dtype=float), side="right") - 1
    return pd.Series(np.maximum(index, 0), index=timestamps.index)


def load_environment(path: str) -> dict | None:
    """The experiment's environment.json (see `study.environment`), or None where it has none."""
    from study.environment import ENVIRONMENT_FILE

    try:
        env = json.loads(storage.read_text(storage.join(storage.normalize(path), ENVIRONMENT_FILE)))
    except (OSError, ValueError, StudyError):
        return None
    return env if isinstance(env, dict) else None


def load_experiments(paths: Iterable[str], pool: bool = False) -> pd.DataFrame:
    """Several experiment folders in one frame, each kept apart unless `pool` is asked for.

    Folders that share an experiment name are different runs: by default each is named by its
    folder. With `pool`, runs of one name are pooled as more seeds of one study, which they
    are only when every config field but the seed matches; otherwise this says what differs.
    """
    frames = [load_experiment(p) for p in paths]
    by_name: dict[str, list[pd.DataFrame]] = {}
    for frame in frames:
        by_name.setdefault(frame["experiment"].iloc[0], []).append(frame)
    for name, runs in by_name.items():
        if len(runs) < 2:
            continue
        if pool:
            check_poolable(name, runs)
        else:
            for frame in runs:
                frame["experiment"] = storage.basename(frame["experiment_path"].iloc[0])
    return label_variants(pd.concat(frames, ignore_index=True))


def check_poolable(name: str, runs: list[pd.DataFrame]) -> None:
    """Runs pool only when each variant's config, seed aside, is the same in every run, and no
    variant has a seed in two runs: that is one measurement twice (a copied or repeated run),
    which would narrow the error bars without adding anything."""
    fields = [c for c in runs[0] if c.startswith("config_") and c != "config_seed"]

    def settings(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
        out = {}
        for variant, group in frame.groupby(frame["variant"].fillna("all")):
            out[str(variant)] = {c[len("config_") :]: "/".join(sorted({str(v) for v in group[c]})) for c in fields}
        return out

    first = settings(runs[0])
    for frame in runs[1:]:
        other = settings(frame)
        for variant in sorted(set(first) | set(other)):
            a, b = first.get(variant), other.get(variant)
            if a is None or b is None:
                raise StudyError(
                    f"--pool: {name}: variant {variant} is in one run only; these runs are different studies"
                )
            differ = [f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b.get(k)]
            if differ:
                paths = f"{runs[0]['experiment_path'].iloc[0]} and {frame['experiment_path'].iloc[0]}"
                raise StudyError(
                    f"--pool: {paths} differ in {', '.join(differ)} (variant {variant}); they cannot be pooled"
                )
    first_with: dict[tuple[str, str], str] = {}  # (variant, seed) -> the run that has it
    for frame in runs:
        path = frame["experiment_path"].iloc[0]
        seeds = frame["config_seed"] if "config_seed" in frame else pd.Series("default", index=frame.index)
        pairs = zip(frame["variant"].fillna("all"), seeds, strict=True)
        for variant, seed in sorted({(str(v), str(s)) for v, s in pairs}):
            earlier = first_with.setdefault((variant, seed), path)
            if earlier != path:
                raise StudyError(
                    f"--pool: {earlier} and {path} both ran variant {variant} with seed {seed}: the same "
                    "measurement twice, not another seed; pool runs made with other seeds (study run FILE --seed N, once "
                    "per new seed)"
                )


def label_variants(frame: pd.DataFrame) -> pd.DataFrame:
    """Name each trial's variant: its YAML variant name, else the config fields that vary.

    Seeds are not part of a variant: trials that differ only by seed are repeats of one variant.
    """
    frame = frame.copy()
    for _, group in frame.groupby("experiment"):
        if group["variant"].notna().all():
            continue
        # Sampled fields make every trial different: they are the search, not variants of it.
        searched = set(json.loads(group["searched"].iloc[0])) if "searched" in group else set()
        config_cols = [c for c in group if c.startswith("config_") and c != "config_seed" and c[7:] not in searched]
        varying = [c for c in config_cols if group[c].map(str).nunique() > 1]  # None counts as a value
        labels = (
            group[varying]
            .map(str)
            .apply(lambda row: ",".join(f"{c[len('config_') :]}={v}" for c, v in row.items()) or "all", axis=1)
            if varying
            else pd.Series("all", index=group.index)
        )
        frame.loc[group.index, "variant"] = labels
    return frame
