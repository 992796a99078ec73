"""Shared fixtures. Tests train for real, on tiny offline data (digits, synthetic)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 reports usage unless told not to

# Every Ray the tests start (in-process, or by a `study` subprocess, which inherits this) keeps
# its session folder (logs, sockets; about 1 MB each) under one folder of this test run, removed
# when the run ends, instead of adding to /tmp/ray for good. Short: Ray's unix sockets live in it.
# mkdtemp makes it 0700, which `study` requires of Ray's temporary folder (cluster.private_temp_dir).
if "RAY_TMPDIR" not in os.environ:
    RAY_TMPDIR = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
else:
    RAY_TMPDIR = None  # the caller's choice: theirs to keep


# The machine cache of datasets (study.data.cache) goes to a folder of this test run too, not the
# user's ~/.cache; `study` subprocesses and Ray workers inherit it.
if "STUDY_CACHE_DIR" not in os.environ:
    STUDY_CACHE_DIR = os.environ["STUDY_CACHE_DIR"] = tempfile.mkdtemp(prefix="study-cache-")
else:
    STUDY_CACHE_DIR = None


def pytest_sessionfinish(session, exitstatus):
    if RAY_TMPDIR is not None:  # session fixtures (the in-process Ray) are torn down by now
        shutil.rmtree(RAY_TMPDIR, ignore_errors=True)
    if STUDY_CACHE_DIR is not None:
        shutil.rmtree(STUDY_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def fast_tests_start_no_ray_and_no_subprocess(request, monkeypatch):
    """`pytest -m "not slow"` is the fast tier: a test not marked slow that starts Ray or a
    subprocess fails, naming the mark it needs, so the tier stays what README says it is."""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.name} starts Ray or a subprocess: mark it @pytest.mark.slow")

    popen = subprocess.Popen.__init__

    def popen_or_refuse(self, command, *args, **kwargs):
        program = command if isinstance(command, str | bytes | os.PathLike) else command[0]
        if os.path.basename(os.fsdecode(program)) in LIBRARY_PROBES:  # a library's own look at the machine
            return popen(self, command, *args, **kwargs)
        refuse()

    monkeypatch.setattr(subprocess.Popen, "__init__", popen_or_refuse)
    monkeypatch.setattr("ray.init", refuse)


# Programs libraries run on their own when first imported (torch's CUDA path finder runs ldconfig):
# not a test starting a subprocess.
LIBRARY_PROBES = {"ldconfig", "ldconfig.real", "uname"}


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: a real download that fails at once


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, no dashboard) for the in-process Tuner and CLI tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def write_yaml(tmp_path):
    """Write a search-space file from text and return its path."""

    def write(text: str, name: str = "space.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def run_cli(capsys):
    """Run `study ...` in-process; return (exit code, stdout, stderr)."""
    from study.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
