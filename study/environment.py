"""What produced a run: package versions, the git commit, the command line and the machine.

`study run` writes this as `environment.json` into every experiment folder before the first
trial starts; `study resume` appends a record for each resume. The analysis prints a one-line
summary of it, and says so when experiments it reads were made by different versions or
commits. Nothing here imports Ray or torch: versions come from the installed distributions'
metadata, so collecting them costs milliseconds.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

ENVIRONMENT_FILE = "environment.json"
PACKAGE = "cifar-study"  # this project's distribution name (pyproject.toml)
# Distributions whose versions decide a result; the keys of environment.json's "versions".
VERSIONED = ("torch", "torchvision", "ray", "optuna", "pandas", "numpy", PACKAGE)


def package_versions() -> dict[str, str | None]:
    """Python's and each distribution's version (None when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(folder: str) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout holding `folder`; (None, None) if none."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):  # no git on this machine, or it hangs
            return None
        return proc.stdout if proc.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # Only this project's own checkout counts, not a repository that merely holds a virtualenv.
    if top is None or os.path.realpath(top.strip()) != os.path.realpath(folder):
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:  # a repository with no commit yet
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def gpu_names() -> list[str]:
    """Names of the GPUs this process sees ([] on a CPU machine). Imports torch only if loaded."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def collect(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything environment.json records about this process and machine."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, if any
    commit, dirty = git_state(source)
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": commit,  # None when the package is not run from a git checkout
        "git_dirty": dirty,  # uncommitted changes to tracked files; None without git
        "command": list(sys.argv if argv is None else argv),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
    }


def summary(env: dict[str, Any]) -> str:
    """One line: "study 0.1.0 @ 5421ace (dirty), torch 2.14.1, ray 2.60.0, ... on host (2 CPUs)"."""
    versions = env.get("versions") or {}
    commit = env.get("git_commit")
    code = f"{PACKAGE} {versions.get(PACKAGE)}"
    if commit:
        code += f" @ {str(commit)[:10]}" + (" (uncommitted changes)" if env.get("git_dirty") else "")
    libs = ", ".join(
        f"{k} {versions.get(k)}" for k in ("python", "torch", "torchvision", "ray", "optuna") if versions.get(k)
    )
    gpus = env.get("gpus") or []
    machine = (
        f"{env.get('hostname')} ({env.get('cpu_count')} CPUs" + (f", {len(gpus)}x {gpus[0]}" if gpus else "") + ")"
    )
    return f"{code}; {libs}; on {machine}"


def differences(envs: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between the environments of several experiments, one phrase per field."""
    fields: dict[str, dict[str, Any]] = {}
    for name, env in envs.items():
        for key, value in (env.get("versions") or {}).items():
            fields.setdefault(key, {})[name] = value
        fields.setdefault("git commit", {})[name] = env.get("git_commit")
    out = []
    for key, by_experiment in fields.items():
        if len({str(v) for v in by_experiment.values()}) > 1:
            out.append(f"{key}: " + ", ".join(f"{v} ({n})" for n, v in by_experiment.items()))
    return out
