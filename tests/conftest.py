"""Shared fixtures. Tests train for real, on tiny offline data (digits, synthetic)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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
