"""Storage on s3://, against a real S3 API on loopback: moto's standalone server, started here.

pyarrow (and Ray, through it) finds the server by the URI's own query string,
`s3://bucket/path?endpoint_override=127.0.0.1:PORT&scheme=http`, with dummy credentials.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.error_catalogue import TINY
from tests.processes import free_port, kill_tree, start_study, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.slow  # every test here talks to a moto server the module starts


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; yields the bucket's URI root and query."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
    import pyarrow.fs

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = free_port("127.0.0.1")
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: answers(port), 60, "moto's server", server)
        admin = pyarrow.fs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
        )
        admin.create_dir("study")
        yield "s3://study", f"endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        kill_tree(server)  # by its own PID
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def uri(s3, path: str) -> str:
    root, query = s3
    return f"{root}/{path}?{query}"


def test_paths_keep_the_query_and_reach_the_server(s3):
    from study import storage
    from study.errors import StudyError

    results = uri(s3, "results")
    exp = storage.join(results, "tiny-20261207-101500")
    assert exp == uri(s3, "results/tiny-20261207-101500")
    assert storage.basename(exp) == "tiny-20261207-101500" and storage.parent(exp) == results
    storage.write_text(storage.join(exp, "study.yaml"), "name: tiny\n")
    assert storage.read_text(storage.join(exp, "study.yaml")) == "name: tiny\n"
    assert storage.runs_of(results, "tiny") == [exp]
    with pytest.raises(StudyError, match=r"^s3://nosuch/results\?endpoint_override=.*: no bucket 'nosuch' at this"):
        storage.list_dir(f"s3://nosuch/results?{s3[1]}")


@pytest.mark.parametrize("command", ["analyze", "resume", "run"])
def test_an_endpoint_that_does_not_answer_is_one_line_at_once(s3, command, write_yaml):
    nobody = f"s3://study/results/exp?endpoint_override=127.0.0.1:{free_port('127.0.0.1')}&scheme=http"
    argv = ["run", write_yaml(TINY), "--storage-path", nobody] if command == "run" else [command, nobody]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "study", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert "cannot reach this storage" in done.stderr and "Could not connect" in done.stderr
    assert time.monotonic() - started < 20  # pyarrow's retries alone took 6-8 s


def test_a_folder_on_s3_is_signed_and_its_signed_backup_put_back(s3, tmp_path, monkeypatch, capsys):
    """What a driver killed between Tune's save and the signature leaves, on s3://: the resume
    check puts the signed copy back; a planted pickle is still refused."""
    import pickle

    from study import storage
    from study.errors import StudyError
    from study.trust import signing
    from study.trust.experiment_state import signed_bundle
    from study.trust.resume_checks import check_signature
    from study.trust.state_backup import StateBackup

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # a signing key of this test's own
    exp = uri(s3, "signed/exp")
    state = "experiment_state-2026-12-07_10-00-00.json"
    files = {state: b'{"trial_data": []}', "tuner.pkl": pickle.dumps({"a": 1}), "study.yaml": b"name: x\n"}
    for name, data in files.items():
        storage.write_bytes(storage.join(exp, name), data)
    assert StateBackup(exp).copy_state()
    assert signing.problems(exp) == [] and set(signed_bundle(exp)) == {*files, signing.MANIFEST}

    storage.write_bytes(storage.join(exp, state), b'{"trial_data": [], "saved": "after the signature"}')
    check_signature(exp)
    assert storage.read_bytes(storage.join(exp, state)) == files[state] and signing.problems(exp) == []
    assert "resuming from the signed copy" in capsys.readouterr().err

    storage.write_bytes(storage.join(exp, "searcher-state-planted.pkl"), pickle.dumps(1))
    with pytest.raises(StudyError, match=r"searcher-state-planted.pkl\?endpoint_override=.*: not signed"):
        check_signature(exp)


# FIFO: every trial runs its 3 epochs (ASHA could stop one at its rung, epoch 2).
SPACE = TINY.replace("space:", "scheduler: {type: fifo}\nspace:").replace(
    "epochs: 1", "epochs: 3\n  checkpoint_every: 1\n  seed: {grid: [0, 1]}"
)


def test_a_study_on_s3_runs_resumes_after_sigkill_and_analyzes_and_exports(s3, write_yaml, tmp_path):
    """The promises of local storage, on s3://: a driver killed mid-study resumes in one step,
    signed (no --trust), losing no epoch; the result analyses and exports from the bucket."""
    from study import storage
    from study.analysis.load import load_experiment

    results = uri(s3, "results")
    exp = storage.join(results, "s3run")
    space = write_yaml(SPACE)
    proc = start_study(["run", space, "--storage-path", results, "--name", "s3run"], str(tmp_path / "run.log"))
    try:
        # A checkpoint in the bucket, and Tune's state saved there after it.
        def checkpointed() -> bool:
            trials = [n for n, is_dir in storage.list_dir(exp) if is_dir and n.startswith("trial-")]
            return any(storage.exists(storage.join(exp, t, "checkpoint_000000")) for t in trials)

        wait_for(checkpointed, 240, "a first checkpoint in the bucket", proc)
    finally:
        kill_tree(proc)  # SIGKILL: no final save, no final signature
    resumed = start_study(["resume", exp], str(tmp_path / "resume.log"))
    try:
        assert resumed.wait(timeout=400) == 0, open(tmp_path / "resume.log").read()[-3000:]
    finally:
        kill_tree(resumed)

    frame = load_experiment(exp)
    assert sorted(frame["trial_dir"].unique()) == ["trial-s0-00000", "trial-s1-00001"]
    for trial, rows in frame.groupby("trial_dir"):
        assert sorted(rows["epoch"]) == [1, 2, 3], trial  # none missing, none twice
        assert set(rows["status"]) == {"TERMINATED"}, trial

    from study.cli import main

    assert main(["analyze", exp, "--out", str(tmp_path / "analysis")]) == 0
    assert (tmp_path / "analysis" / "per_variant.csv").exists()
    # Trial results are signed on local folders only (docs/trust.md): export from a URI is trusted by hand.
    assert main(["export", exp, "--out", str(tmp_path / "model.pt")]) == 2
    assert main(["export", exp, "--out", str(tmp_path / "model.pt"), "--trust"]) == 0
    from study.export import load_model

    _, info = load_model(str(tmp_path / "model.pt"))
    assert info["metrics"]["epoch"] == 3.0 and info["source"] in {storage.join(exp, t) for t in frame["trial_dir"]}
