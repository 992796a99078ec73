"""Search-space files: conversion to Tune, and one test per kind of bad input (exit 2, one line)."""

import os
import re

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.sample import Categorical, Float, Integer

from study.errors import StudyError
from study.space import Domain, load_spec
from study.tuning.params import param_space
from study.tuning.search import make_scheduler, make_search

GOOD = """
name: demo
dataset: synthetic
variants:
  small: {channels: 8}
  wide: {channels: 16, batch_norm: true}
baseline: wide
space:
  model: cnn
  batch_norm: false
  seed: {grid: [0, 1, 2]}
  lr: {loguniform: [0.0001, 0.1]}
  dropout: {uniform: [0.0, 0.5]}
  fc_width: {choice: [64, 128]}
  batch_size: {randint: [16, 64]}
  epochs: 3
"""


def test_every_domain_kind_converts_to_tune(write_yaml):
    spec = load_spec(write_yaml(GOOD))
    space = param_space(spec)
    assert space["seed"] == tune.grid_search([0, 1, 2])
    assert isinstance(space["lr"], Float) and space["lr"].lower == 0.0001 and space["lr"].upper == 0.1
    assert isinstance(space["lr"].get_sampler(), Float._LogUniform)
    assert isinstance(space["dropout"], Float) and not isinstance(space["dropout"].get_sampler(), Float._LogUniform)
    assert isinstance(space["fc_width"], Categorical) and space["fc_width"].categories == [64, 128]
    assert isinstance(space["batch_size"], Integer) and (space["batch_size"].lower, space["batch_size"].upper) == (
        16,
        64,
    )
    assert space["epochs"] == 3 and space["dataset"] == "synthetic"
    assert space["variant"] == tune.grid_search(["small", "wide"])
    assert space["study"] == {
        "experiment": "demo",
        "baseline": "wide",
        "max_t": 3,
        "variants": ["small", "wide"],
        "metric": "val_acc",
        "mode": "max",
        "searched": {
            "lr": {"kind": "loguniform", "values": [0.0001, 0.1]},
            "dropout": {"kind": "uniform", "values": [0.0, 0.5]},
            "fc_width": {"kind": "choice", "values": [64, 128]},
            "batch_size": {"kind": "randint", "values": [16, 64]},
        },
    }
    assert spec.num_trials() == 3 * 2
    assert isinstance(make_scheduler(spec), ASHAScheduler)
    assert make_search(spec) is None


def test_tune_holds_every_field_a_trial_runs_with_at_the_top_level(write_yaml):
    """A Ray user reads `result.config["channels"]`: a variant's fields are not nested under it."""
    from ray.tune.search.variant_generator import generate_variants

    configs = [config for _, config in generate_variants({"config": param_space(load_spec(write_yaml(GOOD)))})]
    assert len(configs) == 6
    for config in configs:
        config = config["config"]
        expected = {"small": (8, False), "wide": (16, True)}[config["variant"]]
        assert (config["channels"], config["batch_norm"]) == expected  # the variant's, else the file's
        assert (config["val_size"], config["split_seed"]) == (0.1, 0)  # the split, defaults or not


def test_fifo_and_optuna(write_yaml):
    spec = load_spec(
        write_yaml(
            "scheduler: {type: fifo}\nsearch: {type: optuna, max_concurrent: 3, seed: 1}\nspace: {lr: {loguniform: [0.001, 0.1]}}\n"
        )
    )
    assert isinstance(make_scheduler(spec), FIFOScheduler)
    search = make_search(spec)
    assert isinstance(search, ConcurrencyLimiter) and search.max_concurrent == 3


def test_cli_overrides_are_applied_and_checked(write_yaml):
    spec = load_spec(write_yaml(GOOD), {"max_epochs": 2, "dataset": "digits", "seed": 7, "gpus_per_trial": 0.25})
    assert spec.space["epochs"] == 2 and spec.max_epochs() == 2 and spec.dataset == "digits"
    assert spec.space["seed"] == 7 and spec.resources.gpu == 0.25
    assert isinstance(spec.space["lr"], Domain)
    assert not spec.tensorboard and load_spec(write_yaml(GOOD), {"tensorboard": True}).tensorboard
    assert "tensorboard: true" in load_spec(write_yaml(GOOD), {"tensorboard": True}).text  # saved in study.yaml


def test_every_shipped_space_validates(run_cli):
    root = os.path.join(os.path.dirname(__file__), "..", "search_spaces")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".yaml")]
    assert files
    code, out, err = run_cli("validate", *files)
    assert code == 0, err
    assert out.count(": ok") == len(files)


def test_every_report_space_takes_the_offline_overrides():
    root = os.path.join(os.path.dirname(__file__), "..", "search_spaces", "report")
    for name in sorted(os.listdir(root)):
        spec = load_spec(os.path.join(root, name), {"dataset": "digits", "max_epochs": 3})
        assert spec.dataset == "digits" and spec.max_epochs() == 3, name
        assert all(c.epochs == 3 and c.dataset == "digits" for c in spec.trial_configs()), name
        assert spec.scheduler.grace_period == 1, name  # ASHA still has rungs to stop trials at


def test_validate_takes_the_same_overrides_as_run_and_shows_the_grace_period(run_cli):
    path = os.path.join(os.path.dirname(__file__), "..", "search_spaces", "report", "augmentation.yaml")
    code, out, err = run_cli("validate", path)
    assert code == 0 and "x up to 20 epochs" in out and "asha grace_period 5)" in out, out + err
    code, out, err = run_cli("validate", path, "--dataset", "digits", "--max-epochs", "3")
    assert code == 0 and "x up to 3 epochs" in out and "asha grace_period 1)" in out, out + err
    assert run_cli("validate", path, "--max-epochs", "0")[0] == 2  # checked as in `study run`


def test_validate_says_when_resnet18s_imagenet_weights_are_not_cached(run_cli, tmp_path, monkeypatch):
    from study.models.resnet import weights_path

    path = os.path.join(os.path.dirname(__file__), "..", "search_spaces", "report", "resnet18.yaml")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, out, _ = run_cli("validate", path)
    assert code == 0 and f"note: resnet18's ImageNet weights are not at {weights_path()}" in out
    os.makedirs(os.path.dirname(weights_path()))
    open(weights_path(), "wb").close()
    assert "note:" not in run_cli("validate", path)[1]
    assert "note:" not in run_cli("validate", path, "--set", "pretrained=false")[1]


BAD = [
    ("name: x\nspace: {lr: 0.1]\n", "line 2: YAML syntax error"),
    ("nmae: x\n", "nmae: unknown key; expected one of: name"),
    ("space: {chanels: 64}\n", "space.chanels: unknown key; expected one of: model, hidden"),
    ("space: {epochs: three}\n", "space.epochs: expected an integer, got 'three'"),
    ("space: {batch_norm: 1}\n", "space.batch_norm: expected true or false, got 1"),
    ("space: {model: vgg}\n", "space.model: expected one of cnn, mlp, resnet18, got 'vgg'"),
    (
        "dataset: imagenet\n",
        "dataset: expected one of cifar10, cifar100, digits, imagefolder, synthetic, got 'imagenet'",
    ),
    (
        "space: {augment: {grid: [flip, rotate]}}\n",
        "space.augment.grid: expected one of none, flip, crop, flip+crop, got 'rotate'",
    ),
    ("space: {epochs: 0}\n", "space.epochs: expected an integer >= 1 and <= 10000, got 0"),
    ("space: {lr: {loguniform: [0, 0.1]}}\n", "space.lr.loguniform: expected low > 0 for a log scale, got 0"),
    ("space: {lr: {loguniform: [0.1, 0.01]}}\n", "space.lr.loguniform: expected low < high"),
    ("space: {seed: {grid: []}}\n", "space.seed.grid: expected a non-empty list, got []"),
    ("space: {lr: {normal: [0, 1]}}\n", "space.lr: expected a value or one of {grid, choice"),
    ("scheduler: {type: hyperband}\n", "scheduler.type: expected one of asha, fifo, got 'hyperband'"),
    ("scheduler: {reduction_factor: 1}\n", "scheduler.reduction_factor: expected a value >= 2 and <= 100, got 1"),
    ("search: {type: optuna}\nspace: {seed: {grid: [0, 1]}}\n", "space.seed.grid: optuna samples its points"),
    ("metric: accuracy\n", "metric: expected one of val_acc, val_loss, test_acc"),
    ("metric: val_loss\n", "mode: val_loss is better when lower, so mode must be min, got 'max'"),
    ("space: {val_size: 0}\n", "metric: val_acc needs a validation split, but val_size is 0"),
    ("space: {val_size: 2.5}\n", "space.val_size: expected a fraction in [0, 1) of the train split, or a whole count"),
    ("dataset: digits\nspace: {val_size: 1347}\n", "space.val_size: 1347 holds out 1347 of the 1347 images"),
    ("dataset: digits\nspace: {num_train: 1300}\n", "space.num_train: 1300 is more than the 1212 images"),
    (
        "variants: {m: {model: mlp}}\nspace: {fc_width: 64}\n",
        "space.fc_width: model mlp (variant m) does not read fc_width, a field of cnn",
    ),
    ("space: {model: resnet18, channels: 8}\n", "space.channels: model resnet18 does not read channels"),
    ("variants: {a: {model: cnn}}\nbaseline: b\n", "baseline: expected one of the variants (a), got 'b'"),
    ("variants: {a: {channels: -1}}\n", "variants.a.channels: expected an integer >= 1 and <= 2048, got -1"),
    ("resources: {gpu: 1.5}\n", "resources.gpu: fractions are for sharing one GPU"),
    ("search: {n_startup_trials: 3}\n", "search.n_startup_trials: only an optuna search has start-up trials"),
    ("search: {type: optuna, n_startup_trials: -1}\n", "search.n_startup_trials: expected an integer >= 0"),
    ("- a\n- b\n", "expected a mapping of keys"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_input_is_one_line_naming_file_and_key(write_yaml, run_cli, text, message):
    path = write_yaml(text)
    code, out, err = run_cli("validate", path)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"study: error: {path}: ")
    assert message in err


def test_missing_file_and_unknown_flag(run_cli, tmp_path):
    code, _, err = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such search-space file" in err
    code, _, err = run_cli("run", "x.yaml", "--max-epoch", "3", "--frobnicate")
    assert code == 2 and "unrecognized arguments: --frobnicate" in err and err.count("\n") == 1


def test_set_and_scheduler_overrides(write_yaml, run_cli):
    spec = load_spec(write_yaml(GOOD), {"set": ["num_train=300", "augment=flip"], "scheduler": "fifo"})
    assert spec.space["num_train"] == 300 and spec.space["augment"] == "flip"
    assert isinstance(make_scheduler(spec), FIFOScheduler)
    code, _, err = run_cli("run", write_yaml(GOOD), "--set", "num_train=-5")
    assert code == 2 and "--set num_train=-5: num_train: expected an integer >= 0 and <= 100000000, got -5" in err
    code, _, err = run_cli("run", write_yaml(GOOD), "--set", "num_train")
    assert code == 2 and "--set: expected FIELD=VALUE" in err


def test_random_search_seed_draws_the_same_samples(write_yaml):
    from ray.tune.search import BasicVariantGenerator

    tune.register_trainable("x", lambda config: None)
    spec = load_spec(
        write_yaml("search: {type: random, seed: 3}\nnum_samples: 4\nspace: {lr: {loguniform: [0.0001, 0.1]}}\n")
    )
    draws = []
    for _ in range(2):
        search = make_search(spec)
        assert isinstance(search, BasicVariantGenerator)
        search.add_configurations({"run": {"run": "x", "config": param_space(spec), "num_samples": 4}})
        draws.append([search.next_trial().config["lr"] for _ in range(4)])
    assert draws[0] == draws[1] and len(set(draws[0])) == 4


def test_parameter_counts_in_comments_are_true():
    """A comment like "# 172M parameters" beside a variant must match the model the file builds."""
    import re

    from study.models import create_model

    root = os.path.join(os.path.dirname(__file__), "..", "search_spaces")
    checked = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            spec = load_spec(path)
            for line in open(path):
                claim = re.search(r"^\s+([\w.+-]+):.*#\s*(\d+)M parameters", line)
                if not claim or claim.group(1) not in spec.variants:
                    continue
                index = list(spec.variants).index(claim.group(1))
                cfg = spec.trial_configs()[index]
                model = create_model(cfg.model, 100, **cfg.model_kwargs())  # CIFAR-100: 100 classes
                assert round(sum(p.numel() for p in model.parameters()) / 1e6) == int(claim.group(2)), line
                checked += 1
    assert checked >= 1


def test_repeats_of_an_unsampled_space_are_named_where_they_are_asked_for(run_cli, write_yaml):
    """num_samples 2 over a space that samples nothing trains each configuration twice, seed and
    all: `study validate` says so (and that the tables count them once); a search does not."""
    repeats = write_yaml("dataset: digits\nnum_samples: 2\nspace: {seed: {grid: [0, 1]}}\n", "repeats.yaml")
    code, out, err = run_cli("validate", repeats)
    assert code == 0, err
    assert "ok (4 trials x up to 20 epochs, grid search," in out
    assert (
        "num_samples 2 trains each configuration 2 times with the same seed; the tables count those repeats once" in out
    )
    search = write_yaml(
        "dataset: digits\nnum_samples: 2\nsearch: {type: random}\nspace: {lr: {loguniform: [0.001, 0.1]}}\n", "s.yaml"
    )
    code, out, err = run_cli("validate", search)
    assert code == 0 and "ok (2 trials x up to 20 epochs, random search, 2 samples," in out and "note" not in out, (
        out + err
    )


OPTUNA_8 = "dataset: digits\nnum_samples: 8\nsearch: {type: optuna, seed: 0}\nspace: {lr: {loguniform: [0.001, 0.1]}}\n"


def test_tpes_start_up_trials_are_the_files_and_validate_says_how_many_are_random(run_cli, write_yaml):
    """search.n_startup_trials reaches TPESampler (default: Optuna's own); `study validate` says how
    many trials are random, and that a search no longer than that is a random search."""
    import inspect

    import optuna

    default = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default
    spec = load_spec(write_yaml(OPTUNA_8))
    assert spec.search.startup_trials() == default
    assert make_search(spec).searcher._sampler._n_startup_trials == default
    code, out, err = run_cli("validate", write_yaml(OPTUNA_8))
    assert code == 0, err
    assert f"warning: 8 trials, and TPE's first {default} are random start-up trials: this search is a random " in out
    assert "raise num_samples or lower search.n_startup_trials" in out

    three = write_yaml(OPTUNA_8.replace("seed: 0}", "seed: 0, n_startup_trials: 3}"), "three.yaml")
    assert make_search(load_spec(three)).searcher._sampler._n_startup_trials == 3
    code, out, err = run_cli("validate", three)
    assert code == 0 and "warning" not in out, out + err
    assert "TPE samples the first 3 of the 8 trials at random (search.n_startup_trials)" in out
    code, out, err = run_cli("validate", three, "--num-samples", "3")
    assert "warning: 3 trials, and TPE's first 3 are random start-up trials" in out
    none = write_yaml(OPTUNA_8.replace("seed: 0}", "seed: 0, n_startup_trials: 0}"), "none.yaml")
    assert (
        "no random start-up trials (search.n_startup_trials 0): TPE chooses every trial" in run_cli("validate", none)[1]
    )


def test_the_run_banner_says_how_many_trials_are_random(write_yaml, capsys):
    from study.run.execute import banner

    spec = load_spec(write_yaml(OPTUNA_8))
    for resumed in (False, True):
        banner(spec, "/results/x", {"cpu": 1.0, "gpu": 0.0}, resumed=resumed)
        out = capsys.readouterr().out
        assert f"[study] warning: 8 trials, and TPE's first {spec.search.startup_trials()} are random" in out


@pytest.mark.parametrize(
    "section, value, flags, message",
    [
        ("scheduler", "asha", {"max_epochs": 4}, "scheduler: expected a mapping of keys, got 'asha'"),
        ("space", 5, {"seed": 3}, "space: expected a mapping of config fields, got 5"),
        ("resources", [1], {"cpus_per_trial": 1.0}, "resources: expected a mapping of keys, got [1]"),
    ],
)
def test_a_flag_over_a_section_that_is_not_a_mapping_gets_the_files_one_line(
    write_yaml, section, value, flags, message
):
    """A flag folds into its section only where the section is a mapping; otherwise the file's own
    error names the section."""
    import yaml

    path = write_yaml(yaml.safe_dump({"dataset": "digits", section: value}))
    with pytest.raises(StudyError, match=re.escape(f"{path}: {message}")):
        load_spec(path, flags)
