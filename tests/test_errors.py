"""The bad-input catalogue (docs/errors.md) through `study run`/`resume`/`analyze`.

Each case: exit code 2, one line on stderr naming the file or key, and no experiment folder.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests.conftest import UNREACHABLE
from tests.error_catalogue import CASES, COSTLY, TINY, run_case


def assert_bad_input(result, *fragments: str) -> None:
    code, _, err = result
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name: x\nspace: {lr: 0.1]\n", "line 2: YAML syntax error"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("space: {epochs: 0}\n", "space.epochs: expected an integer >= 1 and <= 10000, got 0"),
        ("space: {lr: {loguniform: [-1, 1]}}\n", "space.lr.loguniform: expected low > 0 for a log scale, got -1"),
    ],
)
def test_bad_files_leave_no_experiment_folder(run_cli, write_yaml, tmp_path, text, fragment):
    storage = tmp_path / "results"
    assert_bad_input(run_cli("run", write_yaml(text), "--storage-path", str(storage)), fragment)
    assert not storage.exists() or not os.listdir(storage)


def files_under(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder) for n in dirs + files}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c.starts_ray else c for c in CASES], ids=[c.what for c in CASES]
)
def test_catalogue_case_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    argv = case.make(str(tmp_path))
    before = files_under(tmp_path)
    code, err = run_case(case, str(tmp_path), argv)
    assert_bad_input((code, "", err), case.fragment)
    assert err.startswith("study: error: ")
    assert files_under(tmp_path) == before  # nothing written, nothing half-made


@pytest.mark.slow  # a `study validate` subprocess each, timed from outside
@pytest.mark.parametrize("what", COSTLY)
def test_costly_inputs_are_refused_in_seconds(what, write_yaml):
    """Each is checked in linear time or refused by its size, before anything grows with it."""
    done = subprocess.run(
        [sys.executable, "-m", "study", "validate", write_yaml(COSTLY[what])],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stderr.startswith("study: error: ") and ("at most" in done.stderr or "far fewer" in done.stderr)


def test_scientific_notation_is_a_number_in_files_and_flags(write_yaml):
    from study.space import load_spec

    spec = load_spec(write_yaml("space: {lr: 1e-3, weight_decay: 5E-4}\n"), {"set": ["momentum=9e-1"]})
    assert spec.space["lr"] == 0.001 and spec.space["weight_decay"] == 0.0005 and spec.space["momentum"] == 0.9


def test_cifar_missing_offline(run_cli, write_yaml, tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    monkeypatch.setattr(CIFAR100, "url", f"{UNREACHABLE}/cifar-100-python.tar.gz")
    data_dir = tmp_path / "data"
    result = run_cli(
        "run",
        write_yaml(TINY),
        "--dataset",
        "cifar100",
        "--data-dir",
        str(data_dir),
        "--storage-path",
        str(tmp_path / "r"),
    )
    assert_bad_input(result, "dataset cifar100: not found in", str(data_dir), "cifar-100-python.tar.gz", "digits")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_pretrained_weights_missing_offline(run_cli, write_yaml, tmp_path, monkeypatch):
    import torchvision.models._api as api

    real = api.load_state_dict_from_url
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda url, *a, **k: real(f"{UNREACHABLE}/x.pth", *a, **k))
    resnet = TINY.replace("  channels: 8\n", "").replace("  fc_width: 32\n", "")  # cnn fields: refused for resnet18
    space = write_yaml(resnet.replace("model: cnn", "model: resnet18\n  pretrained: true"))
    result = run_cli("run", space, "--storage-path", str(tmp_path / "r"))
    assert_bad_input(result, "resnet18 pretrained=true", "resnet18-f37072fd.pth", "pretrained: false")
    assert not (tmp_path / "r").exists()


def test_more_gpus_than_any_node_fails_at_once(ray_session, run_cli, write_yaml, tmp_path):
    result = run_cli("run", write_yaml(TINY), "--gpus-per-trial", "1", "--storage-path", str(tmp_path / "r"))
    assert_bad_input(result, "resources.gpu: each trial asks for 1 CPU and 1 GPU, but no node has that", "--autoscale")
    result = run_cli("run", write_yaml(TINY), "--cpus-per-trial", "64", "--storage-path", str(tmp_path / "r"))
    assert_bad_input(result, "resources.cpu: each trial asks for 64 CPU")
    assert not (tmp_path / "r").exists() or not os.listdir(tmp_path / "r")


@pytest.mark.slow
def test_more_cpus_than_this_machine_fails_before_ray_starts(write_yaml, tmp_path):
    too_many = str((os.cpu_count() or 1) + 1)
    args = ["run", write_yaml(TINY), "--cpus-per-trial", too_many, "--storage-path", str(tmp_path / "r")]
    code = "import sys; from study.cli import main; c = main(sys.argv[1:]); print('ray' in sys.modules); sys.exit(c)"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout.strip() == "False", done.stdout + done.stderr  # Ray not even imported
    assert f"resources.cpu: each trial asks for {too_many} CPU, but this machine has" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_resume_of_nothing(run_cli, write_yaml, tmp_path):
    assert_bad_input(
        run_cli("run", write_yaml(TINY), "--resume", "--storage-path", str(tmp_path)),
        "--resume: no earlier run of 'tiny'",
    )
    assert_bad_input(
        run_cli("run", write_yaml(TINY), "--resume", "--name", "nosuch", "--storage-path", str(tmp_path)),
        "--resume --name nosuch: no run named 'nosuch'",
    )
    assert_bad_input(run_cli("resume", str(tmp_path / "nope")), "no such experiment folder")
    (tmp_path / "plain").mkdir()
    assert_bad_input(run_cli("resume", str(tmp_path / "plain")), "not a study experiment folder")


def test_analyze_a_folder_that_is_not_an_experiment(run_cli, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert_bad_input(run_cli("analyze", str(tmp_path / "notes")), "not a Ray Tune experiment folder")


@pytest.mark.slow
def test_an_unreadable_checkpoint_resumes_from_the_one_before_in_one_step(ray_session, run_cli, write_yaml, tmp_path):
    """A full disk leaves 0-byte checkpoints: `study resume` still works, in one step."""
    import json

    space = write_yaml(TINY.replace("epochs: 1", "epochs: 3"))
    code, _, err = run_cli("run", space, "--storage-path", str(tmp_path), "--name", "exp")
    assert code == 0, err
    (trial,) = glob.glob(str(tmp_path / "exp" / "trial-*" / ""))
    # Make it look interrupted after epoch 2: Tune's state says RUNNING at epoch 2 ...
    (state_path,) = glob.glob(str(tmp_path / "exp" / "experiment_state-*.json"))
    with open(state_path) as f:
        state = json.load(f)
    entry = json.loads(state["trial_data"][0][0])
    entry["status"] = "PAUSED"
    state["trial_data"][0][0] = json.dumps(entry)
    with open(state_path, "w") as f:
        json.dump(state, f)
    from study.trust import signing

    signing.sign(str(tmp_path / "exp"))  # as our own run would have left it
    # ... and the newest checkpoint was cut to 0 bytes by a full disk.
    newest = sorted(glob.glob(os.path.join(trial, "checkpoint_*")))[-1]
    open(os.path.join(newest, "trainer.pt"), "wb").close()
    code, _, err = run_cli("resume", str(tmp_path / "exp"))
    assert code == 0, err
    assert "unreadable checkpoint" in err and "the trial resumes from checkpoint_" in err


def test_long_library_messages_are_cut_at_a_sentence_or_a_word():
    from study.errors import reason

    torch_like = ValueError("Weights only load failed. In PyTorch 2.6, we changed the default value of the " * 3)
    assert reason(torch_like, limit=80) == "Weights only load failed."
    one_sentence = ValueError("word " * 40)
    assert reason(one_sentence, limit=30) == "word word word word word word ..."
    assert reason(ValueError("short. and plain")) == "short. and plain" and reason(KeyError()) == "KeyError"


def test_an_interrupt_outside_the_trials_says_what_there_is_to_resume(run_cli, write_yaml, monkeypatch):
    """Ctrl-C before the trials start (or a second one) ends with 130 and a line that names the
    experiment folder made, if any: nothing else to resume."""
    from study import space
    from study.run import execute

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(space, "load_spec", interrupted)
    monkeypatch.setattr(execute, "experiments_made", [])  # none made by this process (other tests run studies)
    code, _, err = run_cli("validate", write_yaml(TINY))
    assert code == 130 and err == "study: interrupted before any experiment folder was made\n"
    monkeypatch.setattr(execute, "experiments_made", ["/results/tiny-20261201-050000"])
    code, _, err = run_cli("validate", write_yaml(TINY))
    assert code == 130 and err == "study: interrupted; continue with `study resume /results/tiny-20261201-050000`\n"
