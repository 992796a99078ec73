"""Studies that no mistake, crash or shared folder can corrupt, hijack or confuse.

Planted pickles, signatures (of the folder, its checkpoints and its results), name collisions,
--resume matching, signals, what listens where, and the model files and images predict reads.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import shutil
import signal
import subprocess

import pytest

from study import signing, storage
from study.errors import StudyError
from tests.processes import children_of, kill_tree, start_study, wait_for
from tests.processes import result_rows as rows
from tests.test_errors import assert_bad_input
from tests.test_faults import CRASH_SPACE

TINY = """
name: tiny
dataset: synthetic
scheduler: {type: fifo}
space:
  seed: {grid: [0, 1]}
  epochs: 2
  model: cnn
  channels: 8
  fc_width: 32
  num_train: 256
  num_test: 64
"""


class Payload:
    """Unpickling this writes a marker file: proof that someone ran a planted pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(experiment: str, marker: str) -> None:
    """Put a payload where Ray keeps pickles: tuner.pkl and a pickled field of the state."""
    payload = pickle.dumps(Payload(marker))
    with open(os.path.join(experiment, "tuner.pkl"), "wb") as f:
        f.write(payload)
    (state_path,) = glob.glob(os.path.join(experiment, "experiment_state-*.json"))
    with open(state_path) as f:
        state = json.load(f)
    trial = json.loads(state["trial_data"][0][0])
    trial["placement_group_factory"] = payload.hex()  # a field Ray reads with cloudpickle
    state["trial_data"][0][0] = json.dumps(trial)
    with open(state_path, "w") as f:
        json.dump(state, f)
    for params_pkl in glob.glob(os.path.join(experiment, "*", "params.pkl")):
        with open(params_pkl, "wb") as f:
            f.write(payload)


@pytest.fixture
def finished(ray_session, run_cli, write_yaml, tmp_path):
    """A finished tiny experiment, run by this user (so signed with this user's key)."""
    code, _, err = run_cli("run", write_yaml(TINY), "--storage-path", str(tmp_path), "--name", "exp")
    assert code == 0, err
    return str(tmp_path / "exp")


@pytest.mark.slow
def test_planted_pickles_are_never_run_by_analyze_and_refused_by_resume(finished, run_cli, tmp_path):
    assert signing.problem(finished) is None  # our own run is signed as it stands
    marker = str(tmp_path / "PWNED")
    plant(finished, marker)

    code, out, err = run_cli("analyze", finished, "--out", str(tmp_path / "tables"))
    assert code == 0, err
    assert (tmp_path / "tables" / "per_variant.csv").exists()
    assert not os.path.exists(marker)

    assert_bad_input(run_cli("resume", finished), "tuner.pkl: does not match its signature", "--trust")
    assert_bad_input(
        run_cli("run", str(tmp_path / "space.yaml"), "--storage-path", str(tmp_path), "--name", "exp", "--resume"),
        "--trust",
    )
    assert not os.path.exists(marker)


@pytest.mark.slow
def test_a_folder_signed_by_someone_else_or_edited_is_refused(finished, run_cli, tmp_path, monkeypatch):
    copy = str(tmp_path / "copy")
    shutil.copytree(finished, copy)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))  # another user's key
    assert_bad_input(run_cli("resume", copy), "does not match its signature", "--trust")
    monkeypatch.undo()

    assert signing.problem(copy) is None
    with open(os.path.join(copy, "study.yaml"), "a") as f:
        f.write("description: edited after the run\n")
    assert_bad_input(run_cli("resume", copy), "study.yaml: does not match its signature", "an edit would be ignored")
    os.remove(os.path.join(copy, "study.yaml"))
    shutil.copy(os.path.join(finished, "study.yaml"), copy)
    with open(os.path.join(copy, "searcher-state-planted.pkl"), "wb") as f:
        f.write(b"x")
    assert_bad_input(run_cli("resume", copy), "searcher-state-planted.pkl: not signed")


def mark_unfinished(experiment: str, trial: str) -> None:
    """Tune's state says `trial` was paused (as after an interrupt), signed as our own run leaves it."""
    (state_path,) = glob.glob(os.path.join(experiment, "experiment_state-*.json"))
    with open(state_path) as f:
        state = json.load(f)
    for row in state["trial_data"]:
        entry = json.loads(row[0])
        if entry["relative_logdir"] == trial:
            entry["status"] = "PAUSED"
            row[0] = json.dumps(entry)
    with open(state_path, "w") as f:
        json.dump(state, f)
    signing.sign(experiment)


def newest(trial_dir: str) -> str:
    """The checkpoint folder of the trial's newest epoch."""
    return max(
        glob.glob(os.path.join(trial_dir, "checkpoint_*", "meta.json")), key=lambda m: json.load(open(m))["epoch"]
    )[: -len("/meta.json")]


@pytest.mark.slow
def test_a_forged_or_planted_checkpoint_is_refused_by_resume_and_export_unless_trusted(finished, run_cli, tmp_path):
    a, b = sorted(glob.glob(os.path.join(finished, "trial-*")))

    # A forged meta.json (epoch 59, invented epochs at 0.999) and another trial's weights.
    forged = str(tmp_path / "forged")
    shutil.copytree(finished, forged)
    fa, fb = (os.path.join(forged, os.path.basename(t)) for t in (a, b))
    target = newest(fa)
    with open(os.path.join(target, "meta.json")) as f:
        meta = json.load(f)
    invented = [{**meta["history"][-1], "epoch": e, "test_acc": 0.999} for e in range(meta["epoch"] + 1, 60)]
    meta.update(epoch=59, history=meta["history"] + invented)
    with open(os.path.join(target, "meta.json"), "w") as f:
        json.dump(meta, f)
    shutil.copy(os.path.join(newest(fb), "trainer.pt"), target)
    mark_unfinished(forged, os.path.basename(fa))
    name = os.path.basename(fa)
    assert_bad_input(run_cli("resume", forged), f"{target}: does not match its signature", "--trust")
    out = str(tmp_path / "m.pt")
    assert_bad_input(run_cli("export", forged, "--trial", name, "--out", out), f"{target}: does not match", "--trust")
    assert not os.path.exists(out)
    code, printed, err = run_cli("export", forged, "--trial", name, "--out", out, "--trust")
    assert code == 0 and f"exported {name} " in printed, err

    # A planted checkpoint_999999: another trial's signed checkpoint, then one with no signature.
    planted = str(tmp_path / "planted")
    shutil.copytree(finished, planted)
    pa, pb = (os.path.join(planted, os.path.basename(t)) for t in (a, b))
    plant_dir = os.path.join(pa, "checkpoint_999999")
    shutil.copytree(newest(pb), plant_dir)
    assert_bad_input(
        run_cli("export", planted, "--trial", name, "--out", out), f"{plant_dir}: does not match its signature"
    )
    os.remove(os.path.join(plant_dir, "signature.json"))
    assert_bad_input(run_cli("export", planted, "--trial", name, "--out", out), f"{plant_dir}: not signed")
    mark_unfinished(planted, name)
    assert_bad_input(run_cli("resume", planted), f"{plant_dir}: not signed", "--trust")
    code, _, err = run_cli("resume", planted, "--trust")  # read and trusted: it goes on
    assert code == 0, err
    assert signing.checkpoint_problem(newest(a)) is None  # the run's own checkpoints are signed


@pytest.mark.slow
def test_analyze_marks_which_trials_numbers_are_signed_by_this_users_key(finished, run_cli, tmp_path, monkeypatch):
    import pandas as pd

    def analyze(out: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
        code, printed, err = run_cli("analyze", finished, "--out", str(tmp_path / out))
        assert code == 0, err
        read = lambda name: pd.read_csv(tmp_path / out / f"{name}.csv")  # noqa: E731
        return read("results"), read("best_trials"), printed

    results, best, printed = analyze("own")
    assert results["signed"].all() and best["signed"].all() and "not signed" not in printed

    a, _ = sorted(glob.glob(os.path.join(finished, "trial-*")))
    with open(os.path.join(a, "result.json"), "rb") as f:
        original = f.read()
    rows_a = [json.loads(line) for line in original.splitlines()]
    with open(os.path.join(a, "result.json"), "w") as f:
        f.writelines(json.dumps({**r, "test_acc": 0.999}) + "\n" for r in rows_a)  # a forged result
    results, best, printed = analyze("forged")
    signed = best.set_index("trial_dir")["signed"]
    assert not signed[os.path.basename(a)] and signed.sum() == 1
    assert not results[results["trial_dir"] == os.path.basename(a)]["signed"].any()
    assert "note: 1 of 2 trials' results are not signed by your key" in printed

    # Its forged numbers make it the best trial: export refuses to pick and label a model by them.
    out = str(tmp_path / "m.pt")
    assert_bad_input(run_cli("export", finished, "--out", out), f"{a}/result.json: does not match its signature")
    code, printed, err = run_cli("export", finished, "--out", out, "--trust")
    assert code == 0 and f"exported {os.path.basename(a)} " in printed, err

    # A resume would sign the forged rows as this user's: refused. Rows appended after the
    # signed ones (a driver killed before it signed them) are not forged, only not signed.
    assert_bad_input(run_cli("resume", finished), f"{a}/result.json: does not match its signature", "--trust")
    with open(os.path.join(a, "result.json"), "wb") as f:
        f.write(original + json.dumps(rows_a[-1]).encode() + b"\n")
    results, best, printed = analyze("grown")
    assert best["signed"].sum() == 1 and "note: 1 of 2 trials' results are not signed" in printed
    code, _, err = run_cli("resume", finished)
    assert code == 0 and "nothing to resume" in err, err

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))  # someone else reads it
    results, best, printed = analyze("other")
    assert not results["signed"].any() and "2 of 2 trials" in printed
    assert not (tmp_path / "other-user").exists()  # reading makes no key


def test_the_signing_key_is_private_and_made_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    key = signing.secret_key()
    path = signing.secret_path()
    assert path.startswith(str(tmp_path)) and len(key) == signing.KEY_BYTES
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert signing.secret_key() == key


def test_the_signing_key_never_lands_in_the_experiment_folder(tmp_path, monkeypatch):
    from study.state_backup import StateBackup

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    callback = StateBackup(str(tmp_path))
    assert callback.key == signing.secret_key()
    assert signing.secret_key() not in pickle.dumps(callback)  # Tune pickles callbacks into tuner.pkl


def test_two_files_with_one_name_are_refused(run_cli, write_yaml, tmp_path):
    a = write_yaml(TINY, "a.yaml")
    b = write_yaml(TINY, "b.yaml")
    assert_bad_input(
        run_cli("run", a, b, "--storage-path", str(tmp_path / "r")), "b.yaml: name: 'tiny' is also the name of"
    )
    assert_bad_input(
        run_cli("run", a, a, "--storage-path", str(tmp_path / "r")), "a.yaml: given twice; each file runs once"
    )
    assert not (tmp_path / "r").exists()


def test_experiment_folders_are_created_exclusively(tmp_path):
    root = str(tmp_path)
    first = storage.create_experiment_dir(root, "tiny", exact=False)
    second = storage.create_experiment_dir(root, "tiny", exact=False)  # the same second
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    storage.create_experiment_dir(root, "named", exact=True)
    with pytest.raises(StudyError, match="already exists"):
        storage.create_experiment_dir(root, "named", exact=True)


@pytest.mark.slow
def test_two_runs_with_one_name_at_once_never_share_a_folder(write_yaml, tmp_path):
    space = write_yaml(TINY)
    args = ["run", space, "--storage-path", str(tmp_path), "--name", "same"]
    procs = [start_study(args, str(tmp_path / f"run{i}.log")) for i in range(2)]
    try:
        codes = sorted(p.wait(timeout=300) for p in procs)
    finally:
        for p in procs:
            kill_tree(p)
    logs = [open(tmp_path / f"run{i}.log").read() for i in range(2)]
    assert codes == [0, 2], logs
    assert any("--name:" in log and "already exists" in log for log in logs)
    trials = [d for d in os.listdir(tmp_path / "same") if d.startswith("trial-")]
    assert len(trials) == 2  # one run's trials, not two runs' mixed


def test_resume_matches_the_study_name_exactly(tmp_path):
    for name in ("tiny-20261130-095400", "tiny-big-20261130-095500", "tinyx-20261130-095600", "tiny"):
        (tmp_path / name).mkdir()
    assert [os.path.basename(p) for p in storage.runs_of(str(tmp_path), "tiny")] == ["tiny", "tiny-20261130-095400"]


@pytest.mark.slow
def test_resume_refuses_a_file_that_is_not_the_saved_study(finished, run_cli, write_yaml, tmp_path):
    changed = write_yaml(TINY.replace("epochs: 2", "epochs: 3"))
    assert_bad_input(
        run_cli("run", changed, "--storage-path", str(tmp_path), "--name", "exp", "--resume"),
        "is not the study in",
        "space",
        f"study resume {finished}",
    )


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--name", "../../outside"], "--name: expected a name of letters, digits and ._+-"),
        (["--name", ".hidden"], "--name: expected a name"),
        (["--name", "x" * 101], "--name: expected a name"),
    ],
)
def test_names_are_one_safe_path_component(run_cli, write_yaml, tmp_path, args, fragment):
    assert_bad_input(run_cli("run", write_yaml(TINY), "--storage-path", str(tmp_path / "r"), *args), fragment)
    assert not (tmp_path / "r").exists() and not (tmp_path / "outside").exists()


def test_variant_names_are_one_safe_path_component(run_cli, write_yaml, tmp_path):
    text = TINY + "variants:\n  ../evil: {channels: 8}\n"
    assert_bad_input(run_cli("validate", write_yaml(text)), "variants.../evil: expected a name")


def test_a_failed_backup_warns_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    from study.state_backup import StateBackup

    (tmp_path / "experiment_state-x.json").write_text("{}")
    (tmp_path / "tuner.pkl").write_bytes(pickle.dumps("tuner"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full_disk)
    callback = StateBackup(str(tmp_path), every_s=0)
    callback.on_step_end(0, [])
    callback.on_step_end(1, [])
    err = capsys.readouterr().err
    assert err.count("could not back up the experiment state") == 1 and "No space left" in err
    assert not glob.glob(str(tmp_path / ".study-state-new-*"))  # no stray half copies


def listening_sockets(pids: set[int]) -> list[str]:
    """Local addresses that the given processes listen on (TCP), from `ss -ltnp`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_saves_exits_128_plus_n_and_resume_repeats_nothing(write_yaml, tmp_path, signum):
    exp = str(tmp_path / "long")
    log = str(tmp_path / "run.log")
    # A user's OMP_NUM_THREADS, which Ray leaves as it finds it, must not give a 1-CPU trial 2 threads.
    args = ["run", write_yaml(CRASH_SPACE), "--storage-path", str(tmp_path), "--name", "long"]
    proc = start_study(args, log, env={"OMP_NUM_THREADS": "2"})
    try:
        wait_for(lambda: glob.glob(os.path.join(exp, "*", "checkpoint_000000")), 180, "a first checkpoint", proc)
        if signum == signal.SIGINT:  # while it runs: every socket of the study is on loopback
            sockets = listening_sockets({proc.pid, *children_of(proc.pid)})
            assert sockets and all(is_loopback(s) for s in sockets), sockets
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=120)
    finally:
        kill_tree(proc)
    text = open(log).read()
    assert code == 128 + signum, text[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in text and f"study resume {exp}" in text
    assert "Per variant" not in text  # no tables that pretend the study finished
    # The driver prints no traceback. Lines Ray forwards from a trial worker ("(train_trial pid=N)")
    # are excluded: Ray's own SIGTERM handler in a worker it shuts down can print one (a known,
    # intermittent Ray teardown message, noted in the closing note), after the study has stopped.
    driver = "\n".join(line for line in text.splitlines() if "(train_trial pid=" not in line)
    assert "Traceback" not in driver, text[-3000:]

    resumed = start_study(["resume", exp], str(tmp_path / "resume.log"))
    try:
        assert resumed.wait(timeout=300) == 0, open(tmp_path / "resume.log").read()[-3000:]
    finally:
        kill_tree(resumed)
    trials = [d for d in glob.glob(os.path.join(exp, "trial-*")) if os.path.isdir(d)]
    assert len(trials) == 4
    for d in trials:
        assert [r["epoch"] for r in rows(d)] == [1, 2, 3, 4], d  # nothing lost, nothing repeated
        # Each trial trains with one thread per CPU it was given (1), whatever OMP_NUM_THREADS says.
        assert {r["threads"] for r in rows(d)} == {1}, d


def test_a_stop_at_once_does_not_claim_tunes_final_save(capsys):
    from study.cli import stopped
    from study.run import Outcome

    assert stopped(Outcome("/x/exp", 0, signal.SIGINT)) == 130
    assert "Tune's state is saved. Continue with: study resume /x/exp" in capsys.readouterr().err
    assert stopped(Outcome("/x/exp", 0, signal.SIGTERM, at_once=True)) == 143
    err = capsys.readouterr().err
    assert "stopped at once" in err and "state is saved" not in err and "study resume /x/exp" in err


def test_predict_opens_the_listed_raster_formats_and_never_runs_ghostscript(run_cli, tmp_path, monkeypatch):
    """Pillow decodes EPS by running Ghostscript: an EPS, whatever its name, is refused unopened,
    and every listed format is still classified."""
    import torch
    from PIL import EpsImagePlugin, Image

    from tests.error_catalogue import EPS, exported_model

    ran = []

    def ghostscript(*args, **kwargs):
        ran.append(args)
        raise OSError("Ghostscript ran")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    torch.save(exported_model(), tmp_path / "model.pt")
    (tmp_path / "photo.jpg").write_bytes(EPS)
    assert_bad_input(
        run_cli("predict", str(tmp_path / "model.pt"), str(tmp_path / "photo.jpg")), "not an image in a format"
    )
    assert not ran

    images = []
    for extension, mode in (
        ("png", "RGB"),
        ("jpg", "RGB"),
        ("bmp", "RGB"),
        ("gif", "P"),
        ("tiff", "L"),
        ("webp", "RGB"),
    ):
        images.append(str(tmp_path / f"x.{extension}"))
        Image.new(mode, (40, 30)).save(images[-1])
    code, out, err = run_cli("predict", str(tmp_path / "model.pt"), *images, "--top", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 6 and all(line.count(", ") == 1 for line in out.splitlines())


def test_a_trial_passes_over_a_checkpoint_not_signed_for_it(tmp_path, monkeypatch):
    """Planted while the study runs (after resume's check), a checkpoint is still not loaded by
    the trial (a retry after a crash, say), unless the user passed --trust."""
    from study import trainable
    from study.checkpoints import write_meta
    from study.config import TrialConfig
    from study.data.datasets import load_dataset
    from study.train import Trainer

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    cfg = TrialConfig.from_dict(
        dict(dataset="synthetic", num_train=64, num_test=32, model="cnn", channels=4, fc_width=8, batch_size=32)
    )
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.num_train, cfg.num_test)
    trainer, history, name = Trainer(cfg, data), [], "trial-s0-00000"
    for epoch, signed_for in ((1, name), (2, "trial-s9-00009")):  # the newer one is another trial's
        history.append(trainer.run_epoch())
        folder = tmp_path / name / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        trainer.save(str(folder / "trainer.pt"))
        write_meta(str(folder), epoch, "key", history)
        signing.sign_checkpoint(str(folder), signed_for, epoch)

    fresh = Trainer(cfg, data)
    loaded, _ = trainable.resume(fresh, None, str(tmp_path / name), "key", name)
    assert fresh.epoch == 1 and [m["epoch"] for m in loaded] == [1]
    trusting = Trainer(cfg, data)
    loaded, _ = trainable.resume(trusting, None, str(tmp_path / name), "key", name, trust=True)
    assert trusting.epoch == 2 and len(loaded) == 2


def test_a_trial_on_a_node_without_the_key_fails_rather_than_make_one(tmp_path, monkeypatch):
    """A key made on a cluster node would sign checkpoints the driver then refuses as another user's."""
    from study import trainable

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "node"))
    with pytest.raises(StudyError, match=r"cifar-study/secret: no signing key on node .*file_mounts"):
        trainable.node_key()
    assert not (tmp_path / "node").exists()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "copied"))
    key = signing.secret_key()  # copied there (here: made as the driver makes it)
    assert trainable.node_key() == key
