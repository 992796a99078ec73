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
import socket
import subprocess

import pytest

from study import storage
from study.errors import StudyError
from study.trust import signing
from tests.processes import alive, children_of, in_session, kill_tree, start_study, wait_for
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
    """Put a payload where Ray keeps pickles: tuner.pkl, a pickled field of the state, and each
    trial's params.pkl and error.pkl."""
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
        with open(os.path.join(os.path.dirname(params_pkl), "error.pkl"), "wb") as f:
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
    assert not os.path.exists(os.path.join(finished, ".study-lock"))  # released at the run's end
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
        for line, r in zip(original.splitlines(), rows_a, strict=True):  # forged, each row its old length
            forged = json.dumps({**r, "val_acc": 0.999, "test_acc": 0.999})
            f.write(forged[:-1] + " " * max(0, len(line) - len(forged)) + "}\n")
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
    from study.trust.state_backup import StateBackup

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
    from study.trust.state_backup import StateBackup

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
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_stops_saves_exits_128_plus_n_and_resume_repeats_nothing(run_cli, write_yaml, tmp_path, signum):
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
        # A second driver on the running study is refused, naming the first.
        assert_bad_input(run_cli("resume", exp), "another study is running on it", f"pid {proc.pid} on")
        started = {proc.pid, *children_of(proc.pid)}  # the study's processes: Ray's and the trials'
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=120)
        # None outlives the study by 10 s: those it had, and any left in its session (by PID).
        wait_for(
            lambda: not [p for p in started | in_session(proc.pid) if alive(p)], 10, "the study's processes to end"
        )
    finally:
        kill_tree(proc)
    text = open(log).read()
    assert code == 128 + signum, text[-3000:]
    assert not os.path.exists(os.path.join(exp, ".study-lock"))  # released on the way out
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
    from study.cli.commands import stopped
    from study.run.execute import Outcome

    assert stopped(Outcome("/x/exp", 0, signal.SIGINT)) == 130
    assert "Tune's state is saved. Continue with: study resume /x/exp" in capsys.readouterr().err
    assert stopped(Outcome("/x/exp", 0, signal.SIGTERM, at_once=True)) == 143
    err = capsys.readouterr().err
    assert "stopped at once" in err and "state is saved" not in err and "study resume /x/exp" in err


def failing_trial(config: dict) -> None:
    raise ValueError("this trial fails on purpose")


@pytest.mark.slow
def test_a_planted_error_pickle_is_never_unpickled_at_the_end_of_a_run(ray_session, tmp_path, monkeypatch):
    from ray import tune

    from study.run.execute import fit

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    marker = str(tmp_path / "PWNED")

    class PlantErrorPickle(tune.Callback):
        """After Ray writes a failed trial's error.pkl, put a payload in its place. Ray copies it
        from its staging folder into the experiment folder, and reads it back from there."""

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            with open(os.path.join(trial.local_path, "error.pkl"), "wb") as f:
                f.write(pickle.dumps(Payload(marker)))

    tuner = tune.Tuner(
        failing_trial,
        run_config=tune.RunConfig(
            name="exp",
            storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[PlantErrorPickle()],
            verbose=0,
        ),
    )
    outcome = fit(tuner, str(tmp_path / "exp"))
    (planted,) = glob.glob(str(tmp_path / "exp" / "*" / "error.pkl"))  # where Ray looks for it
    assert open(planted, "rb").read() == pickle.dumps(Payload(marker))
    assert outcome.failed_trials == 1
    assert not os.path.exists(marker)


@pytest.mark.slow
def test_no_write_follows_a_symlink_out_of_the_experiment(finished, run_cli, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("the user's own file\n")
    analysis = os.path.join(finished, "analysis")  # the run's own tables
    os.remove(os.path.join(analysis, "results.csv"))
    os.symlink(victim, os.path.join(analysis, "results.csv"))
    assert_bad_input(run_cli("analyze", finished), "analysis/results.csv: is a symbolic link")
    assert victim.read_text() == "the user's own file\n"

    shutil.rmtree(analysis)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, analysis)
    untouched = os.stat(elsewhere).st_mtime_ns
    assert_bad_input(run_cli("analyze", finished), f"{analysis}: is a symbolic link")
    assert os.listdir(elsewhere) == [] and os.stat(elsewhere).st_mtime_ns == untouched  # not even a probe
    os.remove(analysis)

    (trial,) = [d for d in sorted(os.listdir(finished)) if d.startswith("trial-")][:1]
    moved = str(tmp_path / "moved-trial")
    shutil.move(os.path.join(finished, trial), moved)
    os.symlink(moved, os.path.join(finished, trial))
    before = sorted(os.listdir(moved))
    assert_bad_input(run_cli("resume", finished), f"{trial}: is a symbolic link")
    assert sorted(os.listdir(moved)) == before


def hold_lock(experiment: str, pid: int) -> None:
    from study.trust.lock import LOCK_FILE

    with open(os.path.join(experiment, LOCK_FILE), "w") as f:
        json.dump({"pid": pid, "host": socket.gethostname(), "since": "2026-12-07T10:00:00"}, f)


@pytest.mark.slow
def test_a_second_driver_is_refused_and_a_stale_lock_taken_over(run_cli, tmp_path):
    from study.trust.lock import LOCK_FILE

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "study.yaml").write_text(TINY)  # no Tune state: a resume that gets the lock stops there
    # A live study of this user holds it (a process whose name is `study`).
    holder = subprocess.Popen(["bash", "-c", "exec -a study sleep 60"])
    try:
        wait_for(lambda: open(f"/proc/{holder.pid}/cmdline", "rb").read().startswith(b"study\0"), 10, "exec")
        hold_lock(str(exp), holder.pid)
        assert_bad_input(
            run_cli("resume", str(exp)), "another study is running on it", f"pid {holder.pid} on", "since 2026-12-07"
        )
        assert (exp / LOCK_FILE).exists()  # the holder's, left alone
    finally:
        holder.kill()
        holder.wait()
    # Dead now (and a live pid that is no study, e.g. this test's `sleep`, counts as gone too).
    other = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (holder.pid, other.pid):
            hold_lock(str(exp), pid)
            code, _, err = run_cli("resume", str(exp))
            assert code == 2 and f"removed a stale lock of pid {pid}" in err and "no Tune experiment state" in err, err
            assert not (exp / LOCK_FILE).exists()  # taken over, then released at the command's end
    finally:
        other.kill()
        other.wait()


def snapshot(folder: str) -> dict[str, bytes]:
    """Every entry under `folder`, with its content (a link's target): to tell any change."""
    found = {}
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                found[path] = os.readlink(path).encode()
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[path] = f.read()
            else:
                found[path] = b"<folder>"
    return found


@pytest.mark.slow
def test_analyze_never_changes_the_experiment_and_works_read_only(finished, run_cli, tmp_path):
    src = str(tmp_path / "src")
    shutil.copytree(finished, src)
    shutil.rmtree(os.path.join(src, "analysis"))
    (state,) = glob.glob(os.path.join(src, "experiment_state-*.json"))
    with open(state, "r+b") as f:  # cut short by a crash: the analysis reads the backup's copy
        f.truncate(os.path.getsize(state) // 2)
    subprocess.run(["chmod", "-R", "a-w", src], check=True)
    # As root, chmod stops no write: a read-only bind mount does, where this user may mount.
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    mounted = subprocess.run(["mount", "--bind", src, ro], capture_output=True).returncode == 0
    try:
        if mounted and subprocess.run(["mount", "-o", "remount,ro,bind", ro], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        exp = ro if mounted else src
        before = snapshot(src)

        code, out, err = run_cli("analyze", exp, "--out", str(tmp_path / "tables"))
        assert code == 0, err
        assert "reading the last good copy" in err and (tmp_path / "tables" / "per_variant.csv").exists()
        assert snapshot(src) == before  # nothing restored, moved aside or written

        if mounted:
            assert_bad_input(run_cli("analyze", exp), "Read-only file system")
            assert_bad_input(run_cli("resume", exp), "Read-only file system")
        assert snapshot(src) == before
    finally:
        if mounted:
            subprocess.run(["umount", ro], check=True)
        subprocess.run(["chmod", "-R", "u+w", src], check=True)


@pytest.mark.slow
def test_a_local_ray_keeps_its_files_in_a_folder_private_to_the_user(write_yaml, tmp_path):
    import sys
    import tempfile

    base = tempfile.mkdtemp(prefix="t", dir="/tmp")  # short: Ray's unix socket paths live under it
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"}, "TMPDIR": base}

    def study(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "study", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    try:
        space = write_yaml(TINY)
        done = study("run", space, "--storage-path", str(tmp_path), "--name", "exp")
        assert done.returncode == 0, done.stderr[-3000:]
        private = os.path.join(base, f"study-ray-{os.getuid()}")
        assert glob.glob(os.path.join(private, "ray", "session_2*", "sockets"))  # Ray's own (0777) folders
        info = os.stat(private)
        assert info.st_mode & 0o777 == 0o700 and info.st_uid == os.getuid()

        os.chmod(private, 0o755)  # others could enter it, and Ray's folders inside are world-writable
        refused = study("run", space, "--storage-path", str(tmp_path), "--name", "exp2")
        assert_bad_input((refused.returncode, "", refused.stderr), f"{private}: Ray's temporary folder is open")
        os.chmod(private, 0o700)
        os.chown(private, 65534, -1)  # another user's (nobody)
        refused = study("run", space, "--storage-path", str(tmp_path), "--name", "exp2")
        assert_bad_input((refused.returncode, "", refused.stderr), "belongs to another user (uid 65534)")
        assert not (tmp_path / "exp2").exists()
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize(
    "logger,message",
    [
        ("ray.tune.execution.experiment_state", "Saving experiment state to storage at '/x' failed with exception: "),
        ("ray.tune.tune", "Experiment state snapshotting failed:"),
    ],
)
def test_a_failed_state_save_is_one_line_not_a_traceback(logger, message):
    import io
    import logging

    from study.tuning.output import quiet_tune_noise

    quiet_tune_noise()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger(logger).addHandler(handler)
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logging.getLogger(logger).error(message, exc_info=True, stack_info=True)
    finally:
        logging.getLogger(logger).removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1 and "Traceback" not in text and "Stack" not in text, text
    assert "could not save its experiment state" in text and "No space left on device" in text


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
    from study.checkpoints.files import write_meta
    from study.config import TrialConfig
    from study.data.datasets import load_dataset
    from study.train import Trainer
    from study.trust import replay

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
    loaded, _ = replay.resume(fresh, None, str(tmp_path / name), "key", name)
    assert fresh.epoch == 1 and [m["epoch"] for m in loaded] == [1]
    trusting = Trainer(cfg, data)
    loaded, _ = replay.resume(trusting, None, str(tmp_path / name), "key", name, trust=True)
    assert trusting.epoch == 2 and len(loaded) == 2


def test_a_trial_on_a_node_without_the_key_fails_rather_than_make_one(tmp_path, monkeypatch):
    """A key made on a cluster node would sign checkpoints the driver then refuses as another user's."""
    from study.trust import replay

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "node"))
    with pytest.raises(StudyError, match=r"cifar-study/secret: no signing key on node .*file_mounts"):
        replay.node_key()
    assert not (tmp_path / "node").exists()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "copied"))
    key = signing.secret_key()  # copied there (here: made as the driver makes it)
    assert replay.node_key() == key


def test_results_cut_short_by_a_crash_are_unsigned_not_forged(tmp_path):
    """A driver killed while Ray copies result.json leaves it shorter than its signature covers:
    nothing is left to check (as for a trial with no signature), and a resume goes on; a change
    to the signed rows stays forged."""
    key = b"k" * 32
    trial = tmp_path / "trial-s0-00000"
    trial.mkdir()
    (trial / "params.json").write_text('{"seed": 0}')
    rows = "".join(json.dumps({"epoch": e, "val_acc": 0.5}) + "\n" for e in (1, 2))
    (trial / "result.json").write_text(rows)
    assert signing.sign_results(str(trial), key)
    assert signing.results_state(str(trial), key) == signing.SIGNED
    (trial / "result.json").write_text(rows + '{"epoch": 3')  # a row appended, cut mid-line
    assert signing.results_state(str(trial), key) == signing.GROWN
    (trial / "result.json").write_text(rows[:-10])  # cut inside the signed rows
    assert signing.results_state(str(trial), key) == signing.NOT_SIGNED
    (trial / "result.json").write_text(rows.replace("0.5", "0.9"))  # the same length, other numbers
    assert signing.results_state(str(trial), key) == signing.FORGED


def test_results_read_while_ray_writes_them_are_signed_only_where_whole(tmp_path):
    """The driver signs while trials run: a params.json Ray is still writing is left for the next
    pass, and a row being appended is not signed, so neither reads as forged once it is whole."""
    key = b"k" * 32
    trial = tmp_path / "trial-s1-00001"
    trial.mkdir()
    (trial / "params.json").write_text('{"seed": 1, "lr"')  # being written
    row = json.dumps({"epoch": 1, "val_acc": 0.5}) + "\n"
    (trial / "result.json").write_text(row + '{"epoch": 2, "val')  # a row being appended
    assert not signing.sign_results(str(trial), key)
    assert signing.results_state(str(trial), key) == signing.NOT_SIGNED
    (trial / "params.json").write_text('{"seed": 1, "lr": 0.1}')
    assert signing.sign_results(str(trial), key)
    (trial / "result.json").write_text(row + json.dumps({"epoch": 2, "val_acc": 0.6}) + "\n")
    assert signing.results_state(str(trial), key) == signing.GROWN
    assert signing.sign_results(str(trial), key) and signing.results_state(str(trial), key) == signing.SIGNED
