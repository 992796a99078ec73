"""Fault injection with real processes: a killed driver, a killed trial worker, a diverging trial."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from study.trust.experiment_state import BACKUP_DIR
from tests.processes import children_of, kill_tree, start_study, wait_for
from tests.processes import result_rows as rows

CRASH_SPACE = """
name: crash
dataset: synthetic
scheduler: {type: fifo}
space:
  seed: {grid: [0, 1, 2, 3]}
  epochs: 4
  checkpoint_every: 1  # the promise under test: with every epoch saved, a crash repeats at most one
  model: cnn
  channels: 16
  fc_width: 128
  batch_size: 64
  lr: 0.003
  num_train: 2048
  num_test: 256
"""


def checkpoint_epochs(trial_dir: str) -> int:
    """Epochs covered by the newest checkpoint on disk (checkpoint_00000k holds epoch k+1)."""
    found = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
    return int(found[-1].rsplit("_", 1)[1]) + 1 if found else 0


def recorded_epochs(exp: str) -> int:
    """Epochs Tune's saved state holds a result for, over all trials (read as plain JSON)."""
    from study.trust.experiment_state import trial_states

    states = sorted(glob.glob(os.path.join(exp, "experiment_state-*.json")))
    if not states:
        return 0
    return sum(int(t["last_result"].get("epoch", 0)) for t in trial_states(states[-1]).values())


def trial_dirs(exp: str) -> list[str]:
    return sorted(d for d in glob.glob(os.path.join(exp, "*-s*-*")) if os.path.isdir(d))


@pytest.mark.parametrize("stale", [False, True], ids=["study-period", "stale-state"])
@pytest.mark.slow
def test_driver_sigkill_then_resume_loses_and_repeats_nothing(write_yaml, tmp_path, stale):
    space = write_yaml(CRASH_SPACE)
    exp = str(tmp_path / "crash")
    # stale: Tune saves its state once at the start and not again before the kill, so it
    # records no checkpoint at all; the trials must find their newest ones on disk themselves.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "3600"} if stale else None
    args = ["run", space, "--storage-path", str(tmp_path), "--name", "crash"]
    proc = start_study(args, str(tmp_path / "run.log"), env=env)
    try:
        if stale:
            wait_for(lambda: glob.glob(os.path.join(exp, "*", "checkpoint_000001")), 180, "two epochs", proc)
            assert recorded_epochs(exp) == 0  # the state on disk knows no result yet
        else:
            wait_for(lambda: glob.glob(os.path.join(exp, "*", "checkpoint_000000")), 180, "a first checkpoint", proc)
            # ... and Tune has recorded a result: a kill before that leaves nothing to analyse.
            wait_for(lambda: recorded_epochs(exp) > 0, 60, "a result in Tune's state", proc)
    finally:
        kill_tree(proc)  # SIGKILL: no clean shutdown, no final state save
    before = {os.path.basename(d): (len(rows(d)), checkpoint_epochs(d)) for d in trial_dirs(exp)}
    assert any(k >= 1 for _, k in before.values())

    # The interrupted experiment can be analysed as it stands: as far as Tune saved it (its
    # result.json files reach the experiment folder with its state, so none when stale).
    from study.cli import main

    assert main(["analyze", exp, "--out", str(tmp_path / "interrupted")]) == (2 if stale else 0)
    assert (tmp_path / "interrupted" / "per_variant.csv").exists() != stale

    # The folder moves before its resume (to another disk, say): Tune's pickled callbacks name the
    # old one, but the resumed run signs and backs up only where it is now.
    moved = str(tmp_path / "moved" / "crash")
    os.makedirs(os.path.dirname(moved))
    os.rename(exp, moved)
    exp, resumed_at = moved, time.time()
    resumed = start_study(["resume", exp], str(tmp_path / "resume.log"), env=env)
    try:
        assert resumed.wait(timeout=300) == 0, open(tmp_path / "resume.log").read()[-3000:]
    finally:
        kill_tree(resumed)
    assert not os.path.exists(tmp_path / "crash")
    assert os.path.getmtime(os.path.join(exp, BACKUP_DIR)) > resumed_at

    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(exp).trials
    assert len(trials) == 4 and len({t.trial_id for t in trials}) == 4
    assert all(t.status == "TERMINATED" for t in trials), [t.status for t in trials]
    trained_rows = 0
    for d in trial_dirs(exp):
        results = rows(d)
        epochs = [r["epoch"] for r in results]
        assert epochs[-1] == 4 and sorted(set(epochs)) == [1, 2, 3, 4], (d, epochs)  # no epoch missing
        n_before, k = before.get(os.path.basename(d), (0, 0))
        trained = [r["epoch"] for r in results[n_before:] if not r.get("replayed")]
        replayed = [r["epoch"] for r in results[n_before:] if r.get("replayed")]
        trained_rows += n_before + len(trained)
        if k and trained:
            # Trained again from k+1, the newest checkpoint (k when that one was cut short by
            # the kill); the epochs up to it that Tune's state had not seen are replayed, not trained.
            assert trained[0] in (k, k + 1), (d, epochs, k)
            assert all(e <= k for e in replayed), (d, replayed, k)
        if stale and k >= 2:
            assert replayed[: k - 1] == list(range(1, k)), (d, replayed, k)  # Tune's state had none
    if stale:  # Ray's log names no checkpoint (the state had none); the trial says which it used
        assert "[study] continuing from checkpoint_" in open(tmp_path / "resume.log").read()
    in_flight = 2  # 2 CPUs, 1 per trial
    assert trained_rows <= 4 * 4 + in_flight


WORKER_SPACE = """
name: worker
dataset: synthetic
max_failures: 2
space:
  epochs: 6
  checkpoint_every: 1  # checkpoint_00000k holds epoch k+1
  model: cnn
  channels: 16
  fc_width: 128
  batch_size: 64
  lr: 0.003
  num_train: 2048
  num_test: 256
"""


@pytest.mark.slow
def test_killed_trial_worker_is_retried_from_its_checkpoint(write_yaml, tmp_path):
    exp = str(tmp_path / "worker")
    proc = start_study(
        ["run", write_yaml(WORKER_SPACE), "--storage-path", str(tmp_path), "--name", "worker"],
        str(tmp_path / "run.log"),
    )
    try:
        wait_for(lambda: any(len(rows(d)) >= 2 for d in trial_dirs(exp)), 180, "two epochs", proc)
        (trial,) = trial_dirs(exp)
        victim = rows(trial)[-1]["pid"]
        assert victim in children_of(proc.pid)  # the trial's own worker, found through our tree
        os.kill(victim, signal.SIGKILL)
        k = checkpoint_epochs(trial)
        assert proc.wait(timeout=300) == 0, open(tmp_path / "run.log").read()[-3000:]
    finally:
        kill_tree(proc)
    results = rows(trial)
    epochs = [r["epoch"] for r in results]
    pids = [r["pid"] for r in results]
    assert epochs[-1] == 6
    first_after = next(i for i, p in enumerate(pids) if p != victim)
    assert first_after > 0 and all(p != victim for p in pids[first_after:])
    assert epochs[first_after] in (k, k + 1), (epochs, k)  # from the checkpoint, not from epoch 1
    # Had the kill come while it wrote a checkpoint, the retry's start removed that scratch folder.
    from study.checkpoints.policy import scratch_root

    assert not [n for n in os.listdir(scratch_root()) if n.startswith(f"{victim}-")]

    from ray.tune import ExperimentAnalysis

    (t,) = ExperimentAnalysis(exp).trials
    assert t.status == "TERMINATED"


DIVERGE_SPACE = """
name: diverge
dataset: synthetic
scheduler: {type: fifo}
variants:
  sane: {lr: 0.003}
  wild: {lr: 1000.0, optimizer: sgd}
space:
  epochs: 3
  model: cnn
  channels: 8
  fc_width: 64
  batch_size: 64
  num_train: 512
  num_test: 128
"""


@pytest.mark.slow
def test_diverging_trial_stops_and_the_study_goes_on(ray_session, run_cli, write_yaml, tmp_path):
    code, out, err = run_cli("run", write_yaml(DIVERGE_SPACE), "--storage-path", str(tmp_path), "--name", "d")
    assert code == 0, err
    by_variant = {}
    for d in trial_dirs(str(tmp_path / "d")):
        by_variant[os.path.basename(d).split("-")[0]] = rows(d)
    assert by_variant["wild"][-1]["diverged"] is True and by_variant["wild"][-1]["epoch"] < 3
    assert by_variant["sane"][-1]["epoch"] == 3 and not any(r["diverged"] for r in by_variant["sane"])

    import pandas as pd

    table = pd.read_csv(tmp_path / "d" / "analysis" / "per_variant.csv").set_index("variant")
    assert table.loc["wild", "diverged"] == 1 and table.loc["sane", "diverged"] == 0


@pytest.mark.slow
def test_checkpoint_scratch_folders_of_dead_writers_are_removed(tmp_path, monkeypatch):
    import tempfile

    from study.checkpoints.policy import scratch_root

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = scratch_root()
    assert root == str(tmp_path / f"study-checkpoints-{os.getuid()}") and os.stat(root).st_mode & 0o777 == 0o700
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    os.makedirs(os.path.join(root, f"{ended.pid}-x1"))  # a worker killed while writing a checkpoint
    os.makedirs(os.path.join(root, f"{os.getpid()}-x2"))  # this process, still writing one
    assert scratch_root() == root
    assert os.listdir(root) == [f"{os.getpid()}-x2"]
