"""Experiment trackers, real: MLflow on a SQLite store, W&B offline, TensorBoard's event files."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys

import pytest

from study.space import load_spec
from study.trackers.scalars import SCALARS

TRACKED = """name: trackers
dataset: synthetic
loggers: [mlflow]
tensorboard: true  # the tensorboard logger, as before loggers existed
scheduler: {type: fifo}
space:
  epochs: 2
  seed: {grid: [0, 1]}
  model: cnn
  channels: 8
  fc_width: 32
  num_train: 128
  num_test: 64
"""
EPOCH_METRICS = ("val_acc", "test_acc", "train_loss")
BOOKKEEPING = ("done", "should_checkpoint", "threads", "node_id", "pid", "timestamp", "training_iteration", "time_")


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """One 2-trial, 2-epoch study logged to all three trackers (W&B from the command line), in folder exp."""
    from study.cli import main

    root = tmp_path_factory.mktemp("trackers")
    (root / "space.yaml").write_text(TRACKED)
    (root / "wandb").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        env.setenv("WANDB_MODE", "offline")  # no network, no account
        env.setenv("WANDB_DIR", str(root / "wandb"))
        env.delenv("WANDB_PROJECT", raising=False)
        args = ["run", str(root / "space.yaml"), "--storage-path", str(root), "--name", "exp", "--logger", "wandb"]
        assert main(args) == 0
    return root


def epochs_by_trial(experiment) -> dict[str, list[dict]]:
    """Trial folder -> its result.json records, in order."""
    trials = {}
    for path in sorted(glob.glob(os.path.join(experiment, "*", "result.json"))):
        with open(path) as f:
            trials[os.path.basename(os.path.dirname(path))] = [json.loads(line) for line in f if line.strip()]
    return trials


@pytest.mark.slow
def test_mlflow_has_one_run_per_trial_with_its_config_and_every_epoch(tracked):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked}/mlflow.db")
    experiment = client.get_experiment_by_name("trackers")  # the study's experiment name
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    trials = epochs_by_trial(tracked / "exp")
    assert set(runs) == set(trials) and len(runs) == 2
    for name, records in trials.items():
        run = runs[name]
        assert run.info.status == "FINISHED" and run.data.tags["experiment_dir"] == "exp"  # which run of the study
        config = records[0]["config"]
        for key in ("seed", "model", "channels", "fc_width", "epochs", "num_train", "dataset", "val_size"):
            assert run.data.params[key] == str(config[key]), key
        for metric in EPOCH_METRICS:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
            assert history == [(r["epoch"], pytest.approx(r[metric])) for r in records], metric
        assert not any(key.startswith(BOOKKEEPING) for key in run.data.metrics)


def wandb_records(path: str):
    """The records of a W&B run file (.wandb): a 7-byte header, then LevelDB-log blocks of 32 KiB."""
    from wandb.proto import wandb_internal_pb2

    block, data = 32768, open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])  # crc32, length, full/first/middle/last
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


@pytest.mark.slow
def test_wandb_offline_has_one_run_per_trial_grouped_by_experiment_folder_with_every_epoch(tracked):
    folders = glob.glob(str(tracked / "wandb" / "wandb" / "offline-run-*"))  # WANDB_DIR/wandb
    trials = epochs_by_trial(tracked / "exp")
    assert len(folders) == len(trials) == 2
    seen = set()
    for folder in folders:
        (path,) = glob.glob(os.path.join(folder, "*.wandb"))
        records = list(wandb_records(path))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.project == "trackers" and run.run_group == "exp"  # the study's name; this run of it (its folder)
        seen.add(run.display_name)
        history = [
            {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.HasField("history")
        ]
        expected = trials[run.display_name]
        assert [h["epoch"] for h in history] == [r["epoch"] for r in expected] == [1, 2]
        for logged, result in zip(history, expected, strict=True):
            for metric in EPOCH_METRICS:
                assert logged[metric] == pytest.approx(result[metric]), metric
            assert not any(key.startswith(BOOKKEEPING) and key != "training_iteration" for key in logged)
    assert seen == set(trials)


@pytest.mark.slow
def test_tensorboard_shows_the_scalars_a_user_reads_not_tunes_bookkeeping(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for trial, records in epochs_by_trial(tracked / "exp").items():
        (path,) = glob.glob(str(tracked / "exp" / trial / "events.out.tfevents.*"))
        events = EventAccumulator(path)
        events.Reload()
        reported = {key for r in records for key in SCALARS if key in r}
        assert {"val_loss", "val_acc", "train_eval_acc", "epoch_time_s", "images_per_s"} <= reported
        assert set(events.Tags()["scalars"]) == {f"ray/tune/{key}" for key in reported}
        values = [(e.step, e.value) for e in events.Scalars("ray/tune/val_acc")]
        assert values == [(r["epoch"], pytest.approx(r["val_acc"])) for r in records]  # the epoch is the step


@pytest.mark.slow
def test_the_saved_tuner_keeps_the_trackers_for_a_resume(tracked):
    from study.tuning.output import saved_loggers

    saved = (tracked / "exp" / "tuner.pkl").read_bytes()
    assert saved_loggers(str(tracked / "exp"))
    assert all(name in saved for name in (b"EpochMLflow", b"StudyWandb", b"ScalarTensorBoard"))


@pytest.mark.parametrize("logger, module", [("mlflow", "mlflow"), ("wandb", "wandb"), ("tensorboard", "tensorboardX")])
def test_a_logger_whose_package_is_missing_is_one_line_naming_the_extra(
    logger, module, write_yaml, run_cli, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
    space = write_yaml(TRACKED.replace("loggers: [mlflow]", f"loggers: [{logger}]").replace("tensorboard: true", ""))
    code, out, err = run_cli("run", space, "--storage-path", str(tmp_path / "results"))  # Ray is refused here
    extra = "tensorboard" if logger == "tensorboard" else logger
    assert (
        code == 2
        and err
        == f'study: error: loggers: {logger} needs the {module} package; install it with pip install -e ".[{extra}]"\n'
    )
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_loggers_come_from_the_file_the_flag_and_tensorboard_true(write_yaml):
    space = write_yaml(TRACKED)
    assert load_spec(space).trackers() == ("mlflow", "tensorboard")
    spec = load_spec(space, {"logger": ["wandb", "mlflow"]})  # adds to the file's, once each
    assert spec.loggers == ("mlflow", "wandb") and "- wandb" in spec.text  # saved in study.yaml, for a resume
    assert load_spec(write_yaml("dataset: synthetic\n")).trackers() == ()


class FakeTrial:
    """What Ray's MLflow callback reads of a trial: its name and config."""

    def __init__(self, name: str) -> None:
        self.name, self.config = name, {"seed": 0, "lr": 0.01}

    def __str__(self) -> str:
        return self.name


@pytest.mark.slow  # importing mlflow runs `uname -p` (platform.processor)
def test_a_resumed_trial_logs_on_to_its_mlflow_run(tmp_path, monkeypatch):
    """A resume makes the callback anew (Ray's state of it is not kept): the trial finds its run
    by its tags, while another experiment folder's trial of the same name gets its own."""
    from mlflow import MlflowClient

    from study.trackers import callbacks

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_ids = []
    for folder in ("exp", "exp", "other"):  # a run, its resume, a second run of the same file
        (callback,) = callbacks(("mlflow",), "study", folder)
        callback.setup()
        trial = FakeTrial("cnn-s0-00000")
        callback.log_trial_start(trial)
        callback.log_trial_result(1, trial, {"epoch": len(run_ids) + 1, "val_acc": 0.5, "pid": 7})
        callback.log_trial_end(trial)
        run_ids.append(callback._trial_runs[trial])
    assert run_ids[0] == run_ids[1] != run_ids[2]
    client = MlflowClient(uri)
    history = client.get_metric_history(run_ids[0], "val_acc")
    assert sorted(m.step for m in history) == [1, 2] and "pid" not in client.get_run(run_ids[0]).data.metrics


KILLED = """name: killed
dataset: synthetic
loggers: [mlflow, tensorboard]
scheduler: {type: fifo}
space:
  seed: {grid: [0, 1]}
  epochs: 4
  checkpoint_every: 1
  model: cnn
  channels: 16
  fc_width: 128
  batch_size: 64
  num_train: 2048
  num_test: 256
"""


@pytest.mark.slow
def test_a_study_killed_then_resumed_logs_every_epoch_to_the_same_runs(write_yaml, tmp_path):
    """The saved loggers come back with `study resume`, and each trial's epochs land in one run."""
    from mlflow import MlflowClient

    from tests.processes import kill_tree, start_study, wait_for

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {"MLFLOW_TRACKING_URI": uri}
    exp = str(tmp_path / "killed")
    proc = start_study(
        ["run", write_yaml(KILLED), "--storage-path", str(tmp_path), "--name", "killed"], str(tmp_path / "run.log"), env
    )
    try:
        wait_for(lambda: glob.glob(os.path.join(exp, "*", "checkpoint_000000")), 180, "a first checkpoint", proc)
    finally:
        kill_tree(proc)
    resumed = start_study(["resume", exp], str(tmp_path / "resume.log"), env)
    try:
        assert resumed.wait(timeout=300) == 0, open(tmp_path / "resume.log").read()[-3000:]
    finally:
        kill_tree(resumed)
    assert "nothing to resume" not in open(tmp_path / "resume.log").read()  # the kill cut the study short
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    trials = epochs_by_trial(exp)
    assert sorted(r.info.run_name for r in runs) == sorted(trials) and len(runs) == 2  # one run per trial
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_acc")}
        assert steps == {1, 2, 3, 4}, (run.info.run_name, steps)
    for trial in trials:  # TensorBoard came back too
        assert glob.glob(os.path.join(exp, trial, "events.out.tfevents.*")), trial


@pytest.mark.slow  # validate's disk estimate imports torch, which may run ldconfig
def test_validate_notes_a_logger_whose_package_is_missing(write_yaml, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    code, out, err = run_cli("validate", write_yaml(TRACKED), "--logger", "wandb")
    assert code == 0, err
    assert 'note: loggers: wandb needs the wandb package; install it with pip install -e ".[wandb]"' in out
