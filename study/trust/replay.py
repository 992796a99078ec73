"""A trial's own resume: its newest checkpoint signed for it, and the epochs to report again.

After a crash, the checkpoints on disk can be newer than what Tune's saved state names
(`study.trust.recovery`): the trial continues from the newest one it may load, and reports the
epochs after the one Tune recorded again ("replayed"), so result.json, ASHA and Optuna have
every epoch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray import tune

from study.checkpoints.files import newest_first
from study.errors import StudyError
from study.names import CHECKPOINT_FILE
from study.storage import is_uri
from study.train import Trainer
from study.trust import signing
from study.trust.recovery import fallback_checkpoint, recorded_epoch

log = logging.getLogger(__name__)


def node_key() -> bytes:
    """The user's signing key on this node. A trial never makes one: a node without the key
    (a cluster node it was not copied to) would sign with a key the driver does not know."""
    key = signing.existing_key()
    if key is None:
        raise StudyError(
            f"{signing.secret_path()}: no signing key on node {ray.util.get_node_ip_address()}; copy yours "
            "there (cluster.yaml's file_mounts do), so that this trial's checkpoints can be checked"
        )
    return key


def may_load(folder: str, trial: str, trust: bool) -> bool:
    """Whether this trial may load a checkpoint folder: signed for it with the user's key (see
    `study.trust.signing`), or the user passed --trust. One planted while the study runs is never loaded."""
    why = None if trust else signing.checkpoint_problem(folder, node_key(), trial)
    if why:
        log.warning("%s: %s; not loaded (pass --trust to load it)", folder, why)
    return why is None


def resume_from(trainer: Trainer, checkpoint: tune.Checkpoint, trial: str, trust: bool = False) -> None:
    """Load Tune's checkpoint; if it is unreadable, the newest readable older one, else start over.

    A checkpoint cut short by a full disk would otherwise fail the trial on every retry. The
    older ones are looked for beside it, on local storage (`checkpoint.path` is the folder there).
    Each must be signed for this trial unless `trust`.
    """
    with checkpoint.as_directory() as folder:
        if may_load(folder, trial, trust):
            try:
                trainer.load(os.path.join(folder, CHECKPOINT_FILE))
                return
            except StudyError:
                pass
    trial_dir = os.path.dirname(checkpoint.path)
    fallback = None
    if os.path.isdir(trial_dir):
        fallback = fallback_checkpoint(trial_dir, os.path.join(checkpoint.path, CHECKPOINT_FILE))
    if fallback is not None and may_load(os.path.dirname(fallback), trial, trust):
        trainer.load(fallback)
    else:
        fallback = None
    log.warning("unusable checkpoint %s; resumed from %s", checkpoint.path, fallback or "the first epoch")


def resume(
    trainer: Trainer,
    checkpoint: tune.Checkpoint | None,
    trial_dir: str | None,
    key: str,
    trial: str,
    trust: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Continue from the trial's newest readable checkpoint, by the epoch its meta.json records;
    one not signed for `trial` (its folder name) is passed over unless `trust`.

    Returns (history, replay): the metrics of every epoch up to the loaded checkpoint, and those
    of the epochs Tune had not saved before a crash (see `recorded_epoch`), to report again.
    Without a local trial folder (storage on a URI) or meta.json (older checkpoints), Tune's
    checkpoint is used as before, with nothing to replay.
    """
    for folder, meta in newest_first(trial_dir, key) if trial_dir and os.path.isdir(trial_dir) else []:
        if not may_load(folder, trial, trust):
            continue
        try:
            trainer.load(os.path.join(folder, CHECKPOINT_FILE))
        except StudyError as exc:
            log.warning("%s; trying the checkpoint before it", exc)
            continue
        recorded = recorded_epoch(trial_dir, checkpoint.path if checkpoint is not None else None)
        if checkpoint is None or os.path.normpath(folder) != os.path.normpath(checkpoint.path):
            # Ray's own log line names the checkpoint in Tune's state; say which one is used.
            named = os.path.basename(checkpoint.path) if checkpoint is not None else "none"
            print(
                f"[study] continuing from {os.path.basename(folder)} (epoch {meta['epoch']}), newer than the "
                f"checkpoint Tune's state names ({named})",
                flush=True,
            )
        history = meta["history"]
        return history, [m for m in history if m["epoch"] > recorded]
    if checkpoint is not None:
        resume_from(trainer, checkpoint, trial, trust)
    return [], []


def local_trial_dir(checkpoint: tune.Checkpoint | None, experiment_path: str | None) -> str | None:
    """This trial's folder in the experiment, when the storage is a local (or NFS) folder."""
    if checkpoint is not None and not is_uri(checkpoint.path):
        return os.path.dirname(checkpoint.path)
    if experiment_path and not is_uri(experiment_path):
        # Tune's trial folder name: the same on the driver's staging folder and in storage.
        return os.path.join(experiment_path, os.path.basename(tune.get_context().get_trial_dir()))
    return None
