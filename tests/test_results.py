"""Results people can use: an exported model that classifies images as the trial evaluated them."""

from __future__ import annotations

import glob
import json
import os
import shutil

import pandas as pd
import pytest
import torch

from tests.test_errors import assert_bad_input
from tests.test_tune import QUICK

# Every epoch checkpointed (and kept: 2 epochs, keep_checkpoints 2), for the export tests; runs
# meant to pool with the experiment below are made the same way.
EVERY_EPOCH = ("--set", "checkpoint_every=1")


@pytest.fixture(scope="module")
def experiment(ray_session, tmp_path_factory):
    from study.cli import main

    root = tmp_path_factory.mktemp("usable")
    (root / "space.yaml").write_text(QUICK)
    args = ["--storage-path", str(root), "--name", "exp", *EVERY_EPOCH]
    assert main(["run", str(root / "space.yaml"), *args]) == 0
    return root / "exp"


@pytest.mark.slow
def test_export_then_predict_answers_as_the_trial_evaluated(experiment, run_cli, tmp_path):
    from PIL import Image

    from study.data.datasets import load_dataset
    from study.export import classify, load_model
    from study.export.model_file import FORMAT

    out = tmp_path / "model.pt"
    code, printed, err = run_cli("export", str(experiment), "--out", str(out))
    assert code == 0, err
    results = pd.read_csv(experiment / "analysis" / "results.csv")
    last = results.sort_values("epoch").groupby("trial_id").tail(1)
    best = last.sort_values(["val_acc", "trial_dir"], ascending=[False, True]).iloc[0]
    assert f"exported {best['trial_dir']} " in printed  # the file's metric (val_acc, max) picks it

    raw = torch.load(out, weights_only=True)  # plain tensors and containers: no pickle runs
    assert raw["format"] == FORMAT and raw["classes"] == [str(i) for i in range(10)] and len(raw["mean"]) == 3
    model, info = load_model(str(out))
    cfg = info["config"]
    data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["num_train"], cfg["num_test"])
    probs = classify(model, info, data.test_x)
    accuracy = (probs.argmax(1) == data.test_y).float().mean().item()
    assert accuracy == pytest.approx(best["test_acc"], abs=1e-6)  # what the trial itself reported

    paths = []
    for i in range(6):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(data.test_x[i].permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    code, printed, err = run_cli("predict", str(out), *paths, "--top", "3")
    assert code == 0, err
    lines = printed.strip().splitlines()
    assert len(lines) == 6
    for i, line in enumerate(lines):
        top1 = line.split(": ", 1)[1].split(",")[0].split()[0]
        assert top1 == info["classes"][int(probs[i].argmax())], line
        assert len(line.split(", ")) == 3


@pytest.mark.slow
def test_export_labels_the_weights_with_the_metrics_of_their_own_epoch(experiment, run_cli, tmp_path):
    """A trial whose newest checkpoint is older than its last epoch (stopped or crashed between
    two checkpoints) exports that checkpoint with that epoch's metrics, and says so."""
    from study.data.datasets import load_dataset
    from study.export import classify, load_model

    copy = tmp_path / "exp"
    shutil.copytree(experiment, copy)
    results = pd.read_csv(experiment / "analysis" / "results.csv")
    trial = sorted(results["trial_dir"].unique())[0]
    for meta in (copy / trial).glob("checkpoint_*/meta.json"):
        if json.loads(meta.read_text())["epoch"] == 2:
            shutil.rmtree(meta.parent)  # the last epoch's checkpoint is gone: epoch 1's is the newest
    code, printed, err = run_cli("export", str(copy), "--trial", trial, "--out", str(tmp_path / "m.pt"))
    assert code == 0, err
    epoch1 = results[(results["trial_dir"] == trial) & (results["epoch"] == 1)].iloc[0]
    assert f"(epoch 1, val_acc {epoch1['val_acc']:.4f}; its newest checkpoint, the trial ran to epoch 2)" in printed
    model, info = load_model(str(tmp_path / "m.pt"))
    assert info["metrics"]["epoch"] == 1 and info["metrics"]["test_acc"] == pytest.approx(epoch1["test_acc"])
    cfg = info["config"]
    data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["num_train"], cfg["num_test"])
    accuracy = (classify(model, info, data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert accuracy == pytest.approx(epoch1["test_acc"], abs=1e-6)  # the weights are epoch 1's


@pytest.mark.slow
def test_export_a_named_trial_and_bad_inputs(experiment, run_cli, tmp_path):
    trials = sorted(p.name for p in experiment.iterdir() if p.name.startswith(("mlp-", "cnn-")))
    code, printed, err = run_cli("export", str(experiment), "--trial", trials[0], "--out", str(tmp_path / "m.pt"))
    assert code == 0 and f"exported {trials[0]} " in printed, err
    assert_bad_input(
        run_cli("export", str(experiment), "--trial", "nope", "--out", str(tmp_path / "x.pt")),
        "--trial nope: no such trial",
    )
    assert_bad_input(
        run_cli("export", str(experiment), "--trial", "../x", "--out", str(tmp_path / "x.pt")),
        "--trial: expected a name",
    )
    assert not (tmp_path / "x.pt").exists()
    (tmp_path / "not-a-model.pt").write_bytes(b"hello")
    assert_bad_input(run_cli("predict", str(tmp_path / "not-a-model.pt"), "x.png"), "not an exported model")
    assert_bad_input(
        run_cli("predict", str(tmp_path / "m.pt"), str(tmp_path / "missing.png")), "missing.png: unreadable image"
    )


@pytest.mark.slow
def test_runs_of_one_name_stay_apart_unless_pooled_and_alike(experiment, run_cli, tmp_path):
    space = str(experiment.parent / "space.yaml")
    root = str(experiment.parent)
    code, _, err = run_cli(
        "run", space, "--storage-path", root, "--name", "fewer", "--set", "num_train=300", *EVERY_EPOCH
    )
    assert code == 0, err
    code, _, err = run_cli("run", space, "--storage-path", root, "--name", "more-seeds", "--seed", "7", *EVERY_EPOCH)
    assert code == 0, err

    code, out, err = run_cli("analyze", str(experiment), root + "/fewer", "--out", str(tmp_path / "apart"))
    assert code == 0, err
    per_variant = pd.read_csv(tmp_path / "apart" / "per_variant.csv")
    assert sorted(set(per_variant["experiment"])) == ["exp", "fewer"]  # kept apart, named by folder

    assert_bad_input(
        run_cli("analyze", str(experiment), root + "/fewer", "--pool"),
        "differ in num_train 400 vs 300",
        "cannot be pooled",
    )
    code, out, err = run_cli(
        "analyze", str(experiment), root + "/more-seeds", "--pool", "--out", str(tmp_path / "pooled")
    )
    assert code == 0, err
    pooled = pd.read_csv(tmp_path / "pooled" / "per_variant.csv").set_index("variant")
    assert set(pooled.index) == {"mlp", "cnn"} and (pooled["seeds"] == 3).all()  # seeds 0, 1 and 7

    # A copy of a run (or the same seeds run again) is not more seeds: pooling it is refused.
    shutil.copytree(root + "/more-seeds", root + "/copied")
    assert_bad_input(
        run_cli("analyze", str(experiment), root + "/more-seeds", root + "/copied", "--pool"),
        "both ran variant",
        "with seed 7",
    )


SEARCH = """
name: search
dataset: digits
mode: max
num_samples: 6
search: {type: optuna, seed: 0, max_concurrent: 2}
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
space:
  model: cnn
  fc_width: 32
  epochs: 3
  batch_size: 128
  num_train: 300
  lr: {loguniform: [0.0003, 0.03]}
  augment: {choice: [none, flip]}
  channels: {randint: [4, 9]}
  checkpoint_every: 5  # never by itself: ASHA's rungs (epochs 1, 2) and the last are always written
"""


@pytest.mark.slow
def test_a_search_gets_search_tables_importance_plots_and_an_optuna_study(ray_session, run_cli, write_yaml, tmp_path):
    import optuna

    code, out, err = run_cli("run", write_yaml(SEARCH), "--storage-path", str(tmp_path), "--name", "s")
    assert code == 0, err
    analysis = tmp_path / "s" / "analysis"
    best = pd.read_csv(analysis / "best_configurations.csv")
    assert len(best) == 6 and {"lr", "augment", "channels", "val_acc", "epochs", "state"} <= set(best.columns)
    assert list(best["val_acc"]) == sorted(best["val_acc"], reverse=True)  # the default metric, mode max
    assert "Search: hyperparameter importance" in out
    per_variant = pd.read_csv(analysis / "per_variant.csv")
    assert list(per_variant["variant"]) == ["all"]  # sampled fields are the search, not 6 variants
    assert (analysis / "slice_search.png").stat().st_size > 10_000 and (analysis / "parallel_search.png").exists()

    # Optuna's own API reads the study file back: trials, states, params, per-epoch values.
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{analysis / 'optuna.db'}")
    assert len(study.trials) == 6
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert optuna.trial.TrialState.PRUNED in states  # ASHA stopped some: pruned, not complete
    for t in study.trials:
        assert set(t.params) == {"lr", "augment", "channels"} and 4 <= t.params["channels"] <= 8
        assert len(t.intermediate_values) == t.user_attrs["epochs"]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == t.intermediate_values[3]

    # Every trial, stopped by ASHA at a rung or not, has a checkpoint of its last epoch to export.
    from study.checkpoints.files import newest_by_meta

    for result in (tmp_path / "s").glob("*/result.json"):
        last_epoch = [json.loads(line)["epoch"] for line in result.read_text().splitlines()][-1]
        assert newest_by_meta(str(result.parent))[0][1]["epoch"] == last_epoch, result.parent.name


def test_optuna_hears_of_an_asha_stop_as_pruned():
    import optuna
    from ray import tune

    from study.tuning.search import AshaAwareOptunaSearch

    search = AshaAwareOptunaSearch(
        space={"lr": tune.loguniform(1e-4, 1e-1)},
        metric="test_acc",
        mode="max",
        max_t=3,
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    for trial_id, epochs in (("stopped", 1), ("finished", 3)):
        search.suggest(trial_id)
        for epoch in range(1, epochs + 1):
            search.on_trial_result(trial_id, {"test_acc": 0.1 * epoch, "training_iteration": epoch, "epoch": epoch})
        search.on_trial_complete(trial_id, {"test_acc": 0.1 * epochs, "epoch": epochs})
    stopped, finished = search._ot_study.trials
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.intermediate_values == {1: 0.1}
    assert finished.state == optuna.trial.TrialState.COMPLETE and finished.value == pytest.approx(0.3)


@pytest.mark.slow
def test_results_open_with_rays_own_api_as_readme_shows(experiment):
    """README: `Tuner.restore(path, trainable=study.tuning.entry.train_trial).get_results().get_dataframe()`."""
    from ray import tune

    from study.tuning.entry import train_trial

    frame = tune.Tuner.restore(str(experiment), trainable=train_trial).get_results().get_dataframe()
    assert len(frame) == 4 and {"val_acc", "test_acc", "epoch", "config/seed", "config/model"} <= set(frame.columns)
    assert set(frame["config/variant"]) == {"mlp", "cnn"} and "config/variant/model" not in frame  # flat
    best = tune.Tuner.restore(str(experiment), trainable=train_trial).get_results().get_best_result("val_acc", "max")
    assert best.config["model"] in ("mlp", "cnn") and best.config["variant"] == best.config["model"]


@pytest.mark.slow
def test_a_resume_keeps_the_result_loggers_its_run_was_saved_with(experiment, tmp_path, monkeypatch):
    """Runs name their loggers (no TensorBoard by default); a run saved before that gets Tune's defaults."""
    import pickle

    from study.space import load_spec
    from study.tuning import settings, tuner
    from study.tuning.output import saved_loggers

    assert saved_loggers(str(experiment))  # read as bytes from tuner.pkl
    assert not any(experiment.glob("*/events.out.tfevents.*")) and any(experiment.glob("*/result.json"))
    older = tmp_path / "older"
    older.mkdir()
    (older / "tuner.pkl").write_bytes(pickle.dumps({"callbacks": ["StateBackup"]}))
    assert not saved_loggers(str(older)) and not saved_loggers(str(tmp_path / "missing"))
    # Tune adds its own loggers (TensorBoard too) only to a run saved without them.
    monkeypatch.setattr(settings, "USER_AUTO_LOGGERS", None)
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "")  # put back as it was after the test
    monkeypatch.setattr(tuner.tune.Tuner, "restore", lambda *args, **kwargs: None)  # the decision only
    for path, auto in ((older, "0"), (experiment, "1")):
        tuner.restore_tuner(str(path), {"cpu": 1, "gpu": 0}, load_spec(str(experiment / "study.yaml")))
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == auto, path


@pytest.mark.slow
def test_a_report_file_run_offline_is_compared_honestly(ray_session, run_cli, tmp_path):
    """The report's dropout ablation on digits, shrunk: Holm-adjusted effects, the eval-mode gap,
    and no verdict against CIFAR-100 figures."""
    import os

    space = os.path.join(os.path.dirname(__file__), "..", "search_spaces", "report", "dropout.yaml")
    shrink = ["--set", "channels=8", "--set", "fc_width=32", "--set", "num_train=300", "--set", "lr=0.003"]
    args = ["run", space, "--dataset", "digits", "--max-epochs", "1", "--scheduler", "fifo", *shrink]
    code, out, err = run_cli(*args, "--storage-path", str(tmp_path), "--name", "d")
    assert code == 0, err
    analysis = tmp_path / "d" / "analysis"
    report = pd.read_csv(analysis / "against_report.csv")
    assert list(report["verdict"]) == [
        "not comparable (dataset digits, report cifar100; channels 8, report 128; fc_width 32, report 4096)"
    ] * len(report)
    effects = pd.read_csv(analysis / "effects.csv").iloc[0]
    assert effects["p_holm"] == pytest.approx(effects["p_value"])  # one comparison: Holm changes nothing
    assert "Holm p" in effects["verdict"]
    results = pd.read_csv(analysis / "results.csv")
    last = results.sort_values("epoch").groupby("trial_id").tail(1)
    per_variant = pd.read_csv(analysis / "per_variant.csv").set_index("variant")
    for variant, trials in last.groupby("variant"):
        gap = (trials["train_eval_acc"] - trials["test_acc"]).mean()  # eval mode, not the running train_acc
        assert per_variant.loc[variant, "train_test_gap"] == pytest.approx(gap)


GROW = """
name: grow
dataset: synthetic
num_samples: 3
search: {type: optuna, seed: 0, max_concurrent: 1, n_startup_trials: 2}
scheduler: {type: fifo}
space:
  model: cnn
  channels: 4
  fc_width: 16
  epochs: 1
  batch_size: 64
  num_train: 128
  num_test: 64
  lr: {loguniform: [0.001, 0.1]}
"""


@pytest.mark.slow
def test_a_finished_optuna_search_grows_by_resume_and_by_run_resume(ray_session, run_cli, write_yaml, tmp_path):
    """`study resume --num-samples 5` adds 2 trials to a finished 3-trial search: Optuna goes on
    from the 3 it has, which are not run again, and study.yaml says 5, signed."""
    import optuna
    import yaml

    from study.trust import signing
    from study.trust.experiment_state import STATE_GLOB, trial_states
    from study.tuning.search import AshaAwareOptunaSearch

    space = write_yaml(GROW)
    assert run_cli("run", space, "--storage-path", str(tmp_path), "--name", "g")[0] == 0
    path = tmp_path / "g"
    first = {r.parent.name: r.read_text() for r in path.glob("*/result.json")}
    assert len(first) == 3

    code, out, err = run_cli("resume", str(path), "--num-samples", "5")
    assert code == 0, err
    assert "[study] growing the search from 3 to 5 trials" in out
    states = trial_states(sorted(glob.glob(str(path / STATE_GLOB)))[-1])
    assert len(states) == 5 and {t["status"] for t in states.values()} == {"TERMINATED"}
    for name, text in first.items():  # the first 3 are not run again (Tune's logger touches the file)
        assert (path / name / "result.json").read_text() == text, name
    assert yaml.safe_load((path / "study.yaml").read_text())["num_samples"] == 5
    assert signing.problems(str(path)) == []
    searcher = AshaAwareOptunaSearch(max_t=1)  # Ray's saved searcher: Optuna saw all 5
    searcher.restore_from_dir(str(path))
    assert len(searcher._ot_study.trials) == 5
    db = f"sqlite:///{path / 'analysis' / 'optuna.db'}"
    assert len(optuna.load_study(study_name="grow", storage=db).trials) == 5
    assert len(pd.read_csv(path / "analysis" / "best_configurations.csv")) == 5

    code, out, err = run_cli("resume", str(path))  # the grown study is the one on disk now
    assert code == 0 and "every trial of" in err and "had finished; nothing to resume" in err, err
    assert_bad_input(run_cli("resume", str(path), "--num-samples", "5"), "has num_samples 5 already")

    code, out, err = run_cli(
        "run", space, "--storage-path", str(tmp_path), "--name", "g", "--resume", "--num-samples", "6"
    )
    assert code == 0, err
    assert len(trial_states(sorted(glob.glob(str(path / STATE_GLOB)))[-1])) == 6
    assert len(optuna.load_study(study_name="grow", storage=db).trials) == 6


def test_predict_answers_as_text_json_or_csv_the_same_classes(run_cli, tmp_path):
    """Scripts read predictions as JSON or CSV: the same top classes and probabilities as the text."""
    import csv
    import io

    from PIL import Image

    from tests.error_catalogue import exported_model

    torch.save(exported_model(), tmp_path / "model.pt")
    images = []
    for i, color in enumerate(((255, 0, 0), (0, 0, 255))):
        images.append(str(tmp_path / f"x{i}.png"))
        Image.new("RGB", (40, 30), color).save(images[-1])
    model = str(tmp_path / "model.pt")
    code, text, err = run_cli("predict", model, *images, "--top", "2")
    assert code == 0, err
    code, as_json, err = run_cli("predict", model, *images, "--top", "2", "--format", "json")
    assert code == 0, err
    rows = json.loads(as_json)
    assert [r["path"] for r in rows] == images and all(len(r["top"]) == 2 for r in rows)
    for line, row in zip(text.splitlines(), rows, strict=True):
        assert line == f"{row['path']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top"])
    code, as_csv, err = run_cli("predict", model, *images, "--top", "2", "--format", "csv")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(as_csv)))
    assert list(table[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    for record, row in zip(table, rows, strict=True):
        assert record["path"] == row["path"] and record["class_1"] == row["top"][0]["class"]
        assert float(record["probability_2"]) == pytest.approx(row["top"][1]["probability"], abs=1e-6)
    assert run_cli("predict", model, *images, "--format", "xml")[0] == 2


@pytest.mark.slow
def test_quiet_prints_a_line_per_trial_and_where_the_tables_are(ray_session, run_cli, write_yaml, tmp_path):
    space = write_yaml(QUICK)
    code, out, err = run_cli("run", space, "--storage-path", str(tmp_path), "--name", "q", "--quiet")
    assert code == 0, err
    ended = [line for line in out.splitlines() if " ended after " in line]
    assert len(ended) == 4 and all("val_acc 0." in line and "of 4 ended)" in line for line in ended), out
    assert "Trial name" not in out and "Current time" not in out  # no status table
    assert "## 1. Per variant" not in out and f"tables (Markdown + CSV): {tmp_path / 'q' / 'analysis'}" in out
    assert (tmp_path / "q" / "analysis" / "per_variant.md").exists()
    assert len(out.splitlines()) < 15, out
    code, out, err = run_cli("resume", str(tmp_path / "q"), "--quiet")  # nothing left: the same short close
    assert code == 0 and "## 1. Per variant" not in out and "tables (Markdown + CSV)" in out, out + err
