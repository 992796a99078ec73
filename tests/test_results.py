"""Results people can use: an exported model that classifies images as the trial evaluated them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.test_errors import assert_bad_input

pytestmark = pytest.mark.slow

QUICK = """
name: usable
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
def experiment(ray_session, tmp_path_factory):
    from study.cli import main

    root = tmp_path_factory.mktemp("usable")
    (root / "space.yaml").write_text(QUICK)
    assert main(["run", str(root / "space.yaml"), "--storage-path", str(root), "--name", "exp"]) == 0
    return root / "exp"


def test_export_then_predict_answers_as_the_trial_evaluated(experiment, run_cli, tmp_path):
    from PIL import Image

    from study.data import load_dataset
    from study.export import FORMAT, classify, load_model

    out = tmp_path / "model.pt"
    code, printed, err = run_cli("export", str(experiment), "--out", str(out))
    assert code == 0, err
    results = pd.read_csv(experiment / "analysis" / "results.csv")
    last = results.sort_values("epoch").groupby("trial_id").tail(1)
    best = last.loc[last["test_acc"].idxmax()]
    assert f"exported {best['trial_dir']} " in printed  # the file's metric (test_acc, max) picks it

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


def test_runs_of_one_name_stay_apart_unless_pooled_and_alike(experiment, run_cli, tmp_path):
    space = str(experiment.parent / "space.yaml")
    root = str(experiment.parent)
    code, _, err = run_cli("run", space, "--storage-path", root, "--name", "fewer", "--set", "num_train=300")
    assert code == 0, err
    code, _, err = run_cli("run", space, "--storage-path", root, "--name", "more-seeds", "--seed", "7")
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
