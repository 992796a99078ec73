"""What `study validate` says of a checked file: its trials, search, scheduler, disk and notes."""

from __future__ import annotations

import os

from study import trackers
from study.checkpoints.size import checkpoint_disk
from study.errors import plural
from study.space import StudySpec


def search_kind(spec: StudySpec) -> str:
    """What the trials' configurations come from. Tune's variant generator serves both `grid` and
    `random`: it takes every grid value and samples the other domains, num_samples times."""
    if spec.search.type == "optuna":
        return "optuna search"
    if spec.sampled():
        return f"random search, {plural(spec.num_samples, 'sample')}" + (" per grid point" if spec.grids() else "")
    return "grid search"


def report(spec: StudySpec) -> list[str]:
    """The lines `study validate` prints for one file (without the file's name)."""
    largest_mb, total_gb = checkpoint_disk(spec)
    scheduler = spec.scheduler.type
    if scheduler == "asha":
        scheduler += f" grace_period {min(spec.scheduler.grace_period, spec.max_epochs())}"
    trials = spec.num_trials()
    lines = [
        f"ok ({spec.size()}, {search_kind(spec)}, {scheduler}); checkpoints up to {largest_mb:,.0f} MB each, "
        f"at most {total_gb:,.1f} GB on disk ({plural(trials, 'trial')} x {spec.keep_checkpoints} kept)",
        spec.selection_note(),
    ]
    lines += [note for note in (spec.repeats_note(), spec.startup_note()) if note]
    missing = trackers.missing(spec.trackers())
    if missing:
        lines.append(f"note: {missing}; `study run` refuses the file until then")
    if spec.resources.gpu is None and spec.wants_cuda():
        lines.append(
            "note: device cuda needs a GPU in each trial; resources.gpu is unset, so trials get one "
            "only where the cluster has GPUs, and `study run` refuses where it has none"
        )
    if any(c.model == "resnet18" and c.pretrained for c in spec.trial_configs()):
        from study.models.resnet import weights_path

        if not os.path.isfile(weights_path()):
            lines.append(
                f"note: resnet18's ImageNet weights are not at {weights_path()}; `study run` "
                "downloads them first (or fails at once if it cannot: no trial starts)"
            )
    return lines
