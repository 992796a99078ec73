"""The Ray Tune function trainable: a thin wrapper over `study.train.Trainer`.

It turns Tune's `config` into a `TrialConfig`, resumes from `tune.get_checkpoint()` if Tune
hands one over, and after every epoch reports the metrics with a checkpoint of the full state.
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import time
from typing import Any

import ray
from ray import tune

from study.checkpoints import fallback_checkpoint
from study.data import load_dataset
from study.errors import StudyError
from study.schema import CHECKPOINT_FILE, trial_config
from study.train import Trainer


def memory_mb() -> dict[str, float]:
    """This worker's resident memory now and at its peak, in MiB (Linux /proc and getrusage)."""
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return {
        "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def resume_from(trainer: Trainer, checkpoint: tune.Checkpoint) -> None:
    """Load Tune's checkpoint; if it is unreadable, the newest readable older one, else start over.

    A checkpoint cut short by a full disk would otherwise fail the trial on every retry. The
    older ones are looked for beside it, on local storage (`checkpoint.path` is the folder there).
    """
    with checkpoint.as_directory() as folder:
        try:
            trainer.load(os.path.join(folder, CHECKPOINT_FILE))
            return
        except StudyError:
            pass
    trial_dir = os.path.dirname(checkpoint.path)
    fallback = None
    if os.path.isdir(trial_dir):
        fallback = fallback_checkpoint(trial_dir, os.path.join(checkpoint.path, CHECKPOINT_FILE))
    if fallback is not None:
        trainer.load(fallback)
    logging.getLogger(__name__).warning(
        "unreadable checkpoint %s; resumed from %s", checkpoint.path, fallback or "the first epoch"
    )


def train_trial(config: dict[str, Any]) -> None:
    """Train one trial, reporting once per epoch. Resumes from Tune's checkpoint if there is one."""
    # Ray logs every persisted checkpoint at INFO from the worker; once per epoch per trial drowns
    # the progress table. Warnings still show.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = trial_config(config)
    start = time.perf_counter()
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.num_train, cfg.num_test)  # cached per worker
    data_s = time.perf_counter() - start  # reported with every epoch: what this trial paid for its data
    trainer = Trainer(cfg, data)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from(trainer, checkpoint)  # continues at the next epoch, not at 0
        train_epochs(trainer, cfg, data_s)
    finally:
        # Tune ends a stopped trial by raising SystemExit in this thread, and the traceback keeps
        # the frames' locals alive. Left there, the model and tensors would be freed when the
        # worker process exits, from this thread, which then aborts the process (SIGABRT in
        # take_gil, seen at the end of a study with reused workers). Free them now.
        trainer.close()


def train_epochs(trainer: Trainer, cfg: Any, data_s: float) -> None:
    """Epochs until cfg.epochs (or divergence), each reported, with a checkpoint as configured."""
    node_id = ray.get_runtime_context().get_node_id()
    while trainer.epoch < cfg.epochs:
        metrics = trainer.run_epoch()
        metrics.update(node_id=node_id, pid=os.getpid(), device=str(trainer.device), data_s=data_s, **memory_mb())
        save = trainer.epoch % cfg.checkpoint_every == 0 or trainer.epoch == cfg.epochs or metrics["diverged"]
        if not save:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, CHECKPOINT_FILE)
                start = time.perf_counter()
                trainer.save(path)
                metrics["checkpoint_s"] = time.perf_counter() - start  # written to local disk
                metrics["checkpoint_mb"] = os.path.getsize(path) / 2**20
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        if metrics["diverged"]:
            return  # loss is NaN/inf: stop this trial, let the study go on
