"""A real Ray Tune study: Tuner.fit with ASHA on synthetic data, then the CLI end to end."""

import glob
import json
import os
import socket

import pandas as pd
import pytest
import torch

from study.config import TrialConfig
from study.names import CHECKPOINT_FILE
from study.space import load_spec
from study.tuning.tuner import make_tuner

# Two learning rates, one hopeless: ASHA must stop the hopeless trials at its first rung.
# cpu: 2 runs the trials one at a time on the 2-CPU test Ray, so the rung order is fixed:
# a good trial always records first, and each hopeless one lands below the rung's median.
ASHA_SPACE = """
name: asha_test
dataset: synthetic
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
resources: {cpu: 2}
tensorboard: true  # event files beside result.json (off by default)
space:
  lr: {grid: [0.003, 0.0000001]}
  seed: {grid: [0, 1]}
  epochs: 3
  checkpoint_every: 1  # every epoch, so that keep_checkpoints has three to prune
  model: cnn
  channels: 8
  fc_width: 64
  batch_size: 64
  num_train: 512
  num_test: 256
"""


@pytest.mark.slow
def test_tuner_with_asha_reports_stops_and_checkpoints(ray_session, write_yaml, tmp_path):
    spec = load_spec(write_yaml(ASHA_SPACE))
    tuner = make_tuner(spec, str(tmp_path / "asha_test"), {"cpu": 2, "gpu": 0})
    results = tuner.fit()

    assert len(results) == 4 and not results.errors
    epochs = {r.config["lr"]: [] for r in results}
    for r in results:
        assert {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "images_per_s"} <= set(
            r.metrics
        )
        epochs[r.config["lr"]].append(r.metrics["epoch"])
        assert r.metrics["threads"] == 2  # torch's threads: the trial's 2 CPUs
        # Memory: the private part (anonymous pages) is some of what is resident, which is at most the peak.
        assert 0 < r.metrics["rss_anon_mb"] < r.metrics["rss_mb"] <= r.metrics["peak_rss_mb"] + 1
    assert all(glob.glob(os.path.join(r.path, "events.out.tfevents.*")) for r in results)  # tensorboard: true
    assert max(epochs[0.003]) == 3  # the best trial ran to max_t
    assert min(epochs[0.0000001]) < 3, f"ASHA stopped nothing early: {epochs}"

    best = results.get_best_result(metric="val_acc", mode="max")  # selection reads validation, as README shows
    assert best.config["channels"] == 8 and best.config["val_size"] == 0.1  # every field at the top level
    cfg = TrialConfig.from_tune(best.config)
    from study.data.datasets import load_dataset
    from study.train import Trainer

    trainer = Trainer(cfg, load_dataset(**cfg.data_kwargs()))
    with best.checkpoint.as_directory() as folder:
        trainer.load(os.path.join(folder, CHECKPOINT_FILE))
    assert trainer.epoch == best.metrics["epoch"]
    fresh = Trainer(cfg, load_dataset(**cfg.data_kwargs()))
    assert not torch.equal(trainer.model.features[0].weight, fresh.model.features[0].weight)  # trained weights
    # The loaded model scores what the trial reported for that epoch.
    test = trainer.test_loader
    trainer.model.eval()
    with torch.no_grad():
        correct = sum((trainer.model(x).argmax(1) == y).sum().item() for x, y in test)
    assert correct / len(test.labels) == pytest.approx(best.metrics["test_acc"])
    # keep_checkpoints 2: older checkpoints are emptied as the trial goes (the folders stay, for
    # Tune's state); the two kept hold the last two epochs.
    kept = glob.glob(os.path.join(best.path, "checkpoint_*", "trainer.pt"))
    assert len(glob.glob(os.path.join(best.path, "checkpoint_*"))) == 3 and len(kept) == 2
    assert sorted(json.load(open(os.path.join(os.path.dirname(p), "meta.json")))["epoch"] for p in kept) == [2, 3]


QUICK = """
name: cli_test
dataset: digits
scheduler: {type: fifo}
variants:
  mlp: {model: mlp, hidden: 64}
  cnn: {model: cnn, channels: 8, fc_width: 64}
space:
  seed: {grid: [0, 1]}
  epochs: 2
  lr: 0.003
  batch_size: 128
  num_train: 400
"""


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    """One FIFO study of QUICK through `study run`, shared by the tests below (which only read it):
    (experiment folder, search-space file, what the run printed)."""
    import contextlib
    import io

    from study.cli import main

    root = tmp_path_factory.mktemp("finished")
    space = root / "space.yaml"
    space.write_text(QUICK)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(space), "--storage-path", str(root), "--name", "exp"])
    assert code == 0, err.getvalue()
    return root / "exp", str(space), out.getvalue()


@pytest.mark.slow
def test_a_run_saves_its_spec_results_and_signs_its_final_state(finished):
    from study.trust.experiment_state import BACKUP_DIR
    from study.trust.signing import problems

    exp, _, _ = finished
    assert (exp / "study.yaml").exists()
    assert glob.glob(str(exp / "*" / "result.json")) and not glob.glob(str(exp / "*" / "events.out.tfevents.*"))
    # The signed backup of Tune's state is its final save, which came after the last step.
    (state,) = glob.glob(str(exp / "experiment_state-*.json"))
    assert open(state, "rb").read() == (exp / BACKUP_DIR / os.path.basename(state)).read_bytes()
    assert not problems(str(exp)) and not problems(str(exp / BACKUP_DIR))


@pytest.mark.slow
def test_a_run_writes_and_prints_the_five_tables_and_the_curves(finished):
    exp, _, out = finished
    titles = {
        "per_variant": "## 1. Per variant",
        "effects": "## 2. Ablation effects",
        "against_report": "## 3. Against the report",
        "compute": "## 4. Compute",
        "best_trials": "## 5. Best trials",
    }
    for table, title in titles.items():
        assert (exp / "analysis" / f"{table}.csv").exists() and (exp / "analysis" / f"{table}.md").exists()
        assert title in out and title in (exp / "analysis" / f"{table}.md").read_text()
    assert (exp / "analysis" / "curves_cli_test.png").stat().st_size > 10_000
    none = pd.read_csv(exp / "analysis" / "against_report.csv")  # no figure in the report: a header, no rows
    assert none.empty and list(none.columns[:4]) == ["experiment", "variant", "metric", "epoch"]


@pytest.mark.slow
def test_environment_json_records_what_produced_the_run_before_its_first_trial(finished):
    exp, space, out = finished
    env = json.loads((exp / "environment.json").read_text())
    first_result = min(os.path.getmtime(p) for p in glob.glob(str(exp / "*" / "result.json")))
    assert os.path.getmtime(exp / "environment.json") < first_result
    assert set(env["versions"]) == {"python", "torch", "torchvision", "ray", "optuna", "pandas", "numpy", "cifar-study"}
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert env["command"] == ["study", "run", space, "--storage-path", str(exp.parent), "--name", "exp"]
    assert env["hostname"] == socket.gethostname() and env["cpu_count"] == os.cpu_count() and env["gpus"] == []
    assert "git_commit" in env and "git_dirty" in env
    assert env["selection"] == {
        "metric": "val_acc",
        "mode": "max",
        "dataset": "digits",
        "val_size": [0.1],
        "split_seed": [0],
    }
    assert "environment of exp: cifar-study " in out and f"torch {env['versions']['torch']}" in out


@pytest.mark.slow
def test_the_tables_numbers_are_the_raw_results(finished):
    exp, _, _ = finished
    raw = pd.read_csv(exp / "analysis" / "results.csv")
    per_variant = pd.read_csv(exp / "analysis" / "per_variant.csv").set_index("variant")
    last = raw.sort_values("epoch").groupby("trial_id").tail(1)
    for variant, g in last.groupby("variant"):
        assert per_variant.loc[variant, "trials"] == 2 == g["config_seed"].nunique()
        assert per_variant.loc[variant, "test_acc"] == pytest.approx(g["test_acc"].mean())
        assert per_variant.loc[variant, "at_epoch"] == 2 and per_variant.loc[variant, "selected_on"] == "val_acc"
    effects = pd.read_csv(exp / "analysis" / "effects.csv")
    assert list(effects["variant"]) == ["cnn"] and effects["baseline"][0] == "mlp" and effects["at_epoch"][0] == 2
    # FIFO: every trial ran both epochs, so the effect is the difference of the final means.
    assert effects["diff_pp"][0] == pytest.approx(
        100 * (per_variant.loc["cnn", "test_acc"] - per_variant.loc["mlp", "test_acc"])
    )
    # Each epoch's costs are columns too: memory on every row, the write where a checkpoint was made.
    assert raw["rss_mb"].gt(0).all() and raw["threads"].eq(1).all() and raw["data_s"].ge(0).all()
    assert raw.loc[raw["epoch"] == 2, "checkpoint_mb"].gt(0).all()  # the last epoch is always saved


@pytest.mark.slow
def test_each_trial_checkpointed_the_epochs_its_policy_picked(finished):
    """checkpoint_every 0 (auto): each trial saved exactly the epochs the policy picks from its own
    epoch times and the write time it expected (reported), the last among them."""
    from study.checkpoints.policy import checkpoint_due

    exp, _, _ = finished
    results = glob.glob(str(exp / "*" / "result.json"))
    probes, workers = 0, set()
    for path in results:
        history, saved = [], []
        for row in map(json.loads, open(path)):
            history.append({k: row[k] for k in ("epoch", "epoch_time_s", "diverged")})
            assert ("expected_checkpoint_s" in row) == (row["epoch"] < 2), (path, row["epoch"])  # not the last
            if checkpoint_due(0, 2, history, row.get("expected_checkpoint_s", 0.0)):
                history[-1]["checkpoint_s"] = row["checkpoint_s"]  # absent (KeyError) if it was not saved
                saved.append(row["epoch"])
            assert ("checkpoint_s" in row) == (saved[-1:] == [row["epoch"]]), (path, row["epoch"])
            probes += "checkpoint_probe_s" in row
            workers.add(row["pid"])
        assert saved[-1] == 2
    # Only a worker's first trial probes the disk's speed; reused workers' trials do not.
    assert 1 <= probes <= len(workers) < len(results)


@pytest.mark.slow
def test_resuming_a_finished_study_prints_its_tables_and_runs_nothing(finished, run_cli):
    exp, space, _ = finished
    environment = (exp / "environment.json").read_bytes()
    code, out, err = run_cli("resume", str(exp))
    assert code == 0 and "had finished; nothing to resume" in err and "## 1. Per variant" in out, err
    assert (exp / "environment.json").read_bytes() == environment and "Current time" not in out
    code, out, err = run_cli("run", space, "--storage-path", str(exp.parent), "--name", "exp", "--resume")
    assert code == 0 and "had finished; nothing to resume" in err and "## 1. Per variant" in out, err
    assert (exp / "environment.json").read_bytes() == environment and "Current time" not in out


@pytest.mark.slow
def test_analyze_reads_the_experiment_through_a_uri(finished, run_cli, tmp_path):
    """A URI that pyarrow understands (s3:// works the same way)."""
    exp, _, _ = finished
    code, _, err = run_cli("analyze", f"file://{exp}", "--out", str(tmp_path / "from_uri"))
    assert code == 0, err
    assert pd.read_csv(tmp_path / "from_uri" / "per_variant.csv").equals(
        pd.read_csv(exp / "analysis" / "per_variant.csv")
    )


@pytest.mark.slow
def test_a_run_under_a_taken_name_is_refused(finished, run_cli):
    exp, space, _ = finished
    code, _, err = run_cli("run", space, "--storage-path", str(exp.parent), "--name", "exp")
    assert code == 2 and "already exists; pass --resume" in err


def test_analyze_missing_or_empty_folder_is_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("analyze", str(tmp_path / "missing"))
    assert code == 2 and "no such experiment folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("analyze", str(tmp_path / "empty"))
    assert code == 2 and "not a Ray Tune experiment folder" in err and err.count("\n") == 1


def test_registries_are_listed(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0 and all(name in out for name in ("mlp", "cnn", "resnet18")) and "channels=128" in out
    code, out, _ = run_cli("datasets")
    assert code == 0 and all(name in out for name in ("cifar100", "cifar10", "digits", "synthetic", "imagefolder"))
    assert "num_train=0 (the dataset's own size)" in out  # not a bare 0 beside synthetic's 2048


def test_eta_callback_counts_shrinks_plan_and_survives_restore():
    from types import SimpleNamespace

    from study.tuning.progress import EtaCallback

    eta = EtaCallback(planned_trials=2, max_t=4, every_s=1e9)
    eta.setup()
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    for epoch in (1, 2):
        eta.on_trial_result(0, [], a, {"epoch": epoch})
    eta.on_trial_result(0, [], b, {"epoch": 1})
    eta.on_trial_complete(0, [], b)  # stopped by ASHA at epoch 1: 3 epochs never needed
    assert eta.done == 3 and eta.planned == 8 - 3
    assert "3 trial-epochs done of at most 5" in eta.line(eta.start + 30) and "ETA <= 20s" in eta.line(eta.start + 30)

    restored = EtaCallback(planned_trials=2, max_t=4)
    restored.set_state(eta.get_state())
    restored.setup()
    restored.on_trial_result(0, [], a, {"epoch": 3})  # a resumes at its next epoch: counted once
    assert restored.done == 4 and "ETA <= 10s" in restored.line(restored.start + 10)

    grown = EtaCallback(planned_trials=2, max_t=4)  # `study resume --num-samples 3`: one trial more
    grown.set_state(eta.get_state())
    grown.setup(total_num_samples=3)
    assert grown.planned == 5 + 4 and grown.get_state()["trials"] == 3


@pytest.mark.slow
def test_resuming_state_that_names_code_this_version_lacks_is_one_line_and_writes_nothing(
    ray_session, write_yaml, tmp_path, monkeypatch
):
    """A tuner.pkl made by another version of study may name a module or class this one lacks:
    a one-line error that says so, before the banner or environment.json's resume record."""
    from ray import tune

    from study.errors import StudyError
    from study.run.execute import resume_experiment
    from study.space import load_spec

    def restore(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'study.gone'", name="study.gone")

    monkeypatch.setattr(tune.Tuner, "restore", restore)
    spec = load_spec(write_yaml(QUICK))
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    with pytest.raises(StudyError, match=r"tuner.pkl\) names code .*No module named 'study.gone'.*environment.json"):
        resume_experiment(str(experiment), {"cpu": 1.0, "gpu": 0.0}, ["study", "resume"], spec)
    assert list(experiment.iterdir()) == []

    # A class this version lacks is unpickling's AttributeError; any other AttributeError is a bug.
    def missing_class(*args, **kwargs):
        raise AttributeError("Can't get attribute 'Gone' on <module 'study.tuner'>")

    monkeypatch.setattr(tune.Tuner, "restore", missing_class)
    with pytest.raises(StudyError, match="names code .*Can't get attribute 'Gone'"):
        resume_experiment(str(experiment), {"cpu": 1.0, "gpu": 0.0}, ["study", "resume"], spec)

    def bug(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(tune.Tuner, "restore", bug)
    with pytest.raises(AttributeError, match="NoneType"):
        resume_experiment(str(experiment), {"cpu": 1.0, "gpu": 0.0}, ["study", "resume"], spec)
    assert list(experiment.iterdir()) == []


REUSE_SPACE = """
name: reuse
dataset: synthetic
scheduler: {type: fifo}
resources: {cpu: 2}
num_samples: 3
space:                       # no seed in the space: the status table must not ask for one
  epochs: 2
  model: cnn
  channels: 8
  fc_width: 32
  augment: flip+crop
  num_train: 256
  num_test: 64
"""


@pytest.mark.slow
def test_a_reused_worker_gives_each_trial_a_fresh_model_optimiser_and_generator(ray_session, write_yaml, tmp_path):
    """Three trials of one config, one after another in one reused worker: identical results,
    which they would not be if any weights, optimiser moments or random state carried over."""
    tuner = make_tuner(load_spec(write_yaml(REUSE_SPACE)), str(tmp_path / "reuse"), {"cpu": 2, "gpu": 0})
    results = tuner.fit()
    assert len(results) == 3 and not results.errors
    histories = [r.metrics_dataframe.sort_values("epoch") for r in results]
    assert len({int(h["pid"].iloc[0]) for h in histories}) == 1  # the same worker process ran all three
    for history in histories[1:]:
        for metric in ("train_loss", "test_acc", "train_eval_acc"):
            assert list(history[metric]) == list(histories[0][metric]), metric


def test_tunes_misleading_warnings_are_dropped_and_others_kept(caplog):
    import logging

    from study.tuning.output import quiet_tune_noise

    quiet_tune_noise()
    quiet_tune_noise()  # twice (run, then resume, in one process): one filter each
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    assert len(analysis.filters) == 1
    with caplog.at_level(logging.WARNING):
        analysis.warning("Failed to fetch metrics for 6 trial(s):\n- trial_a: FileNotFoundError(...)")
        logging.getLogger("ray.tune.tune").warning(
            "Experiment has been interrupted, but the most recent state was saved.\nResume experiment with: ..."
        )
        logging.getLogger("ray.tune.tune").warning("Trial x: something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["Trial x: something else went wrong"]


def test_ashas_rungs_are_rebuilt_from_the_results_of_restored_trials(tmp_path):
    from types import SimpleNamespace

    from pyarrow import fs
    from ray.tune.schedulers import TrialScheduler

    from study.trust.asha import ResumableASHA

    def trial(name: str, lines: list[str]) -> SimpleNamespace:
        folder = tmp_path / name
        folder.mkdir()
        if lines:
            (folder / "result.json").write_text("\n".join(lines) + "\n")
        return SimpleNamespace(
            trial_id=name, path=str(folder), storage=SimpleNamespace(storage_filesystem=fs.LocalFileSystem())
        )

    asha = ResumableASHA(time_attr="epoch", metric="test_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    row = lambda epoch, acc: json.dumps({"epoch": epoch, "test_acc": acc})  # noqa: E731
    # Before the stop: a ran to the end, b was stopped at the first rung, c's last line was cut short.
    asha.on_trial_add(None, trial("a", [row(1, 0.9), row(2, 0.92), row(3, 0.93), row(4, 0.95)]))
    asha.on_trial_add(None, trial("b", [row(1, 0.5)]))
    asha.on_trial_add(None, trial("c", [row(1, 0.7), '{"epoch": 2, "test_a']))
    asha.on_trial_add(None, trial("d", []))  # new in this run
    fresh = trial("e", [row(1, 0.1)])
    fresh.has_reported_at_least_once = False  # as Tune marks a trial its state saw no result of
    asha.on_trial_add(None, fresh)  # not read: it reports again as it resumes
    rungs = {milestone: dict(recorded) for milestone, recorded in asha._brackets[0]._rungs}
    assert rungs == {4: {"a": 0.95}, 2: {"a": 0.92}, 1: {"a": 0.9, "b": 0.5, "c": 0.7}}
    # So the first trial to reach a rung after the resume is judged against them, as before it.
    assert (
        asha.on_trial_result(None, SimpleNamespace(trial_id="d"), {"epoch": 1, "test_acc": 0.6}) == TrialScheduler.STOP
    )


RUNGS_SPACE = """
name: rungs
dataset: synthetic
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
resources: {cpu: 1}
space:
  seed: {grid: [0, 1, 2, 3]}
  epochs: 3
  model: cnn
  channels: 4
  fc_width: 16
  num_train: 128
  num_test: 64
"""


@pytest.mark.slow
def test_a_resumed_study_keeps_ashas_rungs(ray_session, run_cli, write_yaml, tmp_path, capsys):
    from study.run.execute import resume_experiment
    from study.run.plan import read_spec

    code, out, _ = run_cli("run", write_yaml(RUNGS_SPACE), "--storage-path", str(tmp_path), "--name", "rungs")
    assert code == 0
    # Ray's restore of the finished study (which `study resume` skips): Tune adds its 4 trials back.
    path = str(tmp_path / "rungs")
    outcome = resume_experiment(path, {"cpu": 1.0, "gpu": 0.0}, ["study", "resume", path], read_spec(path))
    assert outcome.failed_trials == 0 and outcome.stopped_by is None
    out = capsys.readouterr().out
    final = out.split("Number of trials: 4/4 (4 TERMINATED)")[0].rsplit("Bracket:", 1)[-1]
    assert "Iter 1.000: None" not in final and "Iter 1.000: " in final  # Ray's own ASHA starts empty


def test_the_status_table_shows_what_varies_and_never_the_whole_config(write_yaml):
    """Ray's reporter shows every config key (the study's metadata dict too) when given none."""
    from study.tuning.output import progress_reporter

    def columns(text: str) -> dict:
        return progress_reporter(load_spec(write_yaml(text)))._parameter_columns

    assert columns("space: {epochs: 1}\n") == {"dataset": "dataset"}
    assert columns("space: {channels: {grid: [8, 16]}, lr: {choice: [0.1, 0.01]}, epochs: 1}\n") == {
        "channels": "channels",
        "lr": "lr",
    }
    assert columns("variants: {a: {channels: 8}}\nspace: {seed: 0}\n") == {"variant": "variant", "seed": "seed"}
