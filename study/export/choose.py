"""Which trial `study export` writes: the one named, else the best by the study's metric."""

from __future__ import annotations

import os
from typing import Any

from study import storage
from study.checks import check_field
from study.errors import StudyError
from study.export.model_file import export_checkpoint, newest_checkpoint
from study.run.plan import read_spec
from study.space import StudySpec
from study.trust.resume_checks import check_results_to_export


def check_out_path(out: str) -> None:
    """--out names a file in a folder that exists."""
    if not os.path.basename(out):  # '' or a path ending in '/'
        raise StudyError(f"--out {out!r}: expected a file name, e.g. model.pt")
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise StudyError(f"--out {out}: {folder} is a file, not a folder")
    if not os.path.isdir(folder):
        raise StudyError(f"--out {out}: no such folder {folder}; create it first")
    if os.path.isdir(out):
        raise StudyError(f"--out {out}: is a folder; expected a file name, e.g. {os.path.join(out, 'model.pt')}")


EXPORTED_METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def export_best(experiment: str, trial: str | None, out: str, trust: bool = False) -> dict[str, Any]:
    """Export one trial's newest checkpoint: `trial` (its folder name), else the best trial by the
    file's metric and mode at each trial's last epoch (what Tune's get_best_result does). Its
    checkpoints must be signed by this user's trials unless `trust` (see `newest_checkpoint`)."""
    import pandas as pd

    from study.analysis.load import load_experiment

    path = storage.normalize(experiment)
    if not storage.exists(path):
        raise StudyError(f"{experiment}: no such experiment folder")
    spec = read_spec(path)
    frame = load_experiment(path)
    last = frame.sort_values("epoch").groupby("trial_dir").tail(1)
    if trial is not None:
        check_field(StudySpec, "name", trial, "--trial: ")
        chosen = last[last["trial_dir"] == trial]
        if chosen.empty:
            raise StudyError(
                f"--trial {trial}: no such trial in {path}; trials: {', '.join(sorted(last['trial_dir']))}"
            )
    else:
        ranked = last.dropna(subset=[spec.metric]).sort_values(  # ties: the first trial folder by name
            [spec.metric, "trial_dir"], ascending=[spec.mode == "min", True], kind="stable"
        )
        chosen = ranked.head(1)
        if chosen.empty:
            raise StudyError(f"{path}: no trial reported {spec.metric}; nothing to export")
    name = chosen.iloc[0]["trial_dir"]
    # The metrics of the epoch the checkpoint holds, which can be older than the trial's last
    # epoch (a run stopped or crashed between two checkpoints), never those of another epoch.
    per_epoch = {
        int(row["epoch"]): {k: float(row[k]) for k in EXPORTED_METRICS if k in row and pd.notna(row[k])}
        for _, row in frame[frame["trial_dir"] == name].iterrows()
    }
    source = storage.join(path, name)
    if not trust:
        check_results_to_export(source)
    exported = export_checkpoint(newest_checkpoint(source, trust), out, per_epoch, source)
    last_epoch = int(chosen.iloc[0]["epoch"])
    return {"trial": name, "metric": spec.metric, "last_epoch": last_epoch, **exported["metrics"]}
