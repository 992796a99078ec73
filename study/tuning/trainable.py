"""The Ray Tune function trainable: a thin wrapper over `study.train.Trainer`.

It turns Tune's `config` into a `TrialConfig`, resumes from the trial's newest checkpoint (see
`study.trust.replay`), and after every epoch reports the metrics, with a checkpoint of the full
state as `checkpoint_due` decides (by default, every epoch unless writing costs more than 5% of
the training since the last checkpoint, or the end is that close) and at the last. Each
checkpoint is signed for its trial and epoch (see `study.trust.signing`).
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import time
from typing import Any

import ray
import torch
from ray import tune

from study.checkpoints.files import config_key, prune, write_meta
from study.checkpoints.policy import WRITE_SPEED, always_checkpointed, checkpoint_due, expected_write_s, scratch_root
from study.config import TrialConfig
from study.data.datasets import load_dataset
from study.names import CHECKPOINT_FILE
from study.train import Trainer
from study.trust import signing
from study.trust.replay import local_trial_dir, node_key, resume

log = logging.getLogger(__name__)


def memory_mb() -> dict[str, float]:
    """This worker's resident memory now and at its peak, in MiB (Linux /proc and getrusage).

    `rss_anon_mb` is the part no other process can share (heap, tensors); the rest of `rss_mb` is
    file pages (the libraries, the memory-mapped dataset cache), shared by the trials on a machine.
    """
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "RssAnon") if key in status}
    return {
        "rss_mb": kib.get("VmRSS", 0) / 1024,
        "rss_anon_mb": kib.get("RssAnon", 0) / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def use_assigned_cpus() -> None:
    """Give torch as many threads as the CPUs Ray assigned this trial (at least 1).

    Ray sets OMP_NUM_THREADS to a task's CPUs, but torch reads it once, when it is imported, and
    a user's own OMP_NUM_THREADS wins over Ray's: either way, trials packed on one machine would
    fight over its cores. The count is reported with every epoch (`threads`).
    """
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    torch.set_num_threads(max(1, int(cpus)))


def train_trial(
    config: dict[str, Any],
    experiment_path: str | None = None,
    keep: int | None = None,
    stop_epochs: tuple[int, ...] = (),
    trust: bool = False,
) -> None:
    """Train one trial, reporting once per epoch; resumes from its newest checkpoint if it has one.

    `experiment_path`: the experiment folder, where the trial finds its checkpoints (see
    `study.checkpoints`); `keep`: how many checkpoints keep their files (None: Tune decides);
    `stop_epochs`: the epochs at which the scheduler may stop it (always checkpointed); `trust`:
    load checkpoints not signed for this trial (`study resume --trust`).
    """
    # Ray logs every persisted checkpoint at INFO from the worker; once per epoch per trial drowns
    # the progress table. Warnings still show.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = TrialConfig.from_tune(config)
    use_assigned_cpus()
    start = time.perf_counter()
    data = load_dataset(**cfg.data_kwargs())
    data_s = time.perf_counter() - start  # reported with every epoch: what this trial paid for its data
    trainer = Trainer(cfg, data)
    key = config_key(config)
    trial_dir = None
    try:
        checkpoint = tune.get_checkpoint()
        trial_dir = local_trial_dir(checkpoint, experiment_path)
        trial = os.path.basename(tune.get_context().get_trial_dir().rstrip("/"))  # what its checkpoints are signed for
        history, replay = resume(trainer, checkpoint, trial_dir, key, trial, trust)
        for metrics in replay:  # epochs Tune's saved state had not seen: result.json, ASHA, Optuna
            tune.report({**metrics, "replayed": True})
        if not (history and history[-1].get("diverged")):  # a diverged trial stays stopped
            train_epochs(trainer, cfg, data_s, key, history, trial_dir if keep else None, keep or 0, stop_epochs)
    finally:
        # Tune ends a stopped trial by raising SystemExit in this thread, and the traceback keeps
        # the frames' locals alive. Left there, the model and tensors would be freed when the
        # worker process exits, from this thread, which then aborts the process (SIGABRT in
        # take_gil, seen at the end of a study with reused workers). Free them now.
        trainer.close()
        if keep and trial_dir:  # also when Tune stopped the trial inside its last report (ASHA)
            prune(trial_dir, key, keep)


def train_epochs(
    trainer: Trainer,
    cfg: Any,
    data_s: float,
    key: str,
    history: list[dict[str, Any]],
    prune_dir: str | None = None,
    keep: int = 0,
    stop_epochs: tuple[int, ...] = (),
) -> None:
    """Epochs until cfg.epochs (or divergence), each reported, with a checkpoint as configured.

    `history` (the metrics of the epochs before, from the checkpoint resumed) grows by each epoch
    and goes into every checkpoint's meta.json. With `prune_dir`, checkpoints beyond the newest
    `keep` there are emptied after each new one.
    """
    node_id = ray.get_runtime_context().get_node_id()
    # Each checkpoint is signed for this trial (its folder name) with the user's key, found as
    # the driver finds it (same user and HOME; on a cluster, copied to every node).
    trial = os.path.basename(tune.get_context().get_trial_dir().rstrip("/"))
    signing_key = node_key()
    scratch = scratch_root()  # where checkpoints are written before Tune moves them to storage
    while trainer.epoch < cfg.epochs:
        metrics = trainer.run_epoch()
        metrics.update(node_id=node_id, pid=os.getpid(), device=str(trainer.device), data_s=data_s, **memory_mb())
        metrics["threads"] = torch.get_num_threads()  # torch's CPU threads: the CPUs Ray assigned (use_assigned_cpus)
        metrics["config_key"] = key  # whose row this is, should a folder name ever be given twice
        history.append(metrics)
        write_s = 0.0
        if cfg.checkpoint_every == 0 and not always_checkpointed(trainer.epoch, cfg.epochs, stop_epochs):
            # auto: what would a write cost?
            write_s, probe_s = expected_write_s(history, trainer.state_bytes(), scratch)
            metrics["expected_checkpoint_s"] = write_s  # the policy's input, in the results
            if probe_s:
                metrics["checkpoint_probe_s"] = probe_s  # this worker's first trial measures its disk
        if not checkpoint_due(cfg.checkpoint_every, cfg.epochs, history, write_s, stop_epochs):
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=scratch) as folder:
                path = os.path.join(folder, CHECKPOINT_FILE)
                start = time.perf_counter()
                trainer.save(path)
                metrics["checkpoint_s"] = time.perf_counter() - start  # written to local disk
                metrics["checkpoint_mb"] = os.path.getsize(path) / 2**20
                WRITE_SPEED.note(os.path.getsize(path), metrics["checkpoint_s"])  # for this worker's next trials
                write_meta(folder, trainer.epoch, key, history)
                signing.sign_checkpoint(folder, trial, trainer.epoch, signing_key)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            if prune_dir:
                prune(prune_dir, key, keep)
        if metrics["diverged"]:
            return  # loss is NaN/inf: stop this trial, let the study go on
