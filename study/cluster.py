"""The Ray cluster a study runs on: start or join it, and check that a trial fits a node."""

from __future__ import annotations

import os
import sys
from typing import Any

import ray

from study.errors import StudyError, reason, where
from study.space import StudySpec
from study.storage import is_uri


def connect(address: str | None) -> None:
    """Start a local Ray (no dashboard) or join the cluster at `address` ("auto" or host:port)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phone-home from offline machines
    # Save Tune's experiment state after every step, not every ~10 s: after a crash each trial
    # then resumes from its newest checkpoint, so at most the epoch in flight is run again.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        try:
            ray.init(address=address, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = " (is RAY_AUTH_MODE=token set, as for `ray start`?)" if "auth" in str(exc).lower() else ""
            raise StudyError(f"--address {address}: cannot connect to the Ray cluster: {reason(exc)}{hint}") from None
    else:
        ray.init(**kwargs)


def alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def resolve_resources(spec: StudySpec, autoscale: bool) -> dict[str, float]:
    """Resources per trial: the file's, else 1 CPU and (where the cluster has GPUs) 1 GPU.

    Unless the cluster autoscales, a trial that no node can hold is an error now, instead of a
    trial that sits PENDING forever.
    """
    nodes = alive_nodes()
    has_gpu = any(n.get("GPU", 0) > 0 for n in nodes)
    cpu = spec.resources.cpu if spec.resources.cpu is not None else 1.0
    gpu = spec.resources.gpu if spec.resources.gpu is not None else (1.0 if has_gpu else 0.0)
    if autoscale and spec.resources.gpu is None and not has_gpu:
        print(
            "[study] warning: no GPU node is up yet, so trials ask for 0 GPUs; pass --gpus-per-trial "
            "(e.g. 0.25) for the autoscaler to start GPU nodes",
            file=sys.stderr,
        )
    fits = any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes)
    if not fits and not autoscale:
        biggest = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
        key = "resources.gpu" if gpu > 0 and not any(n.get("GPU", 0) >= gpu for n in nodes) else "resources.cpu"
        raise StudyError(
            f"{where(spec.source, key)}each trial asks for {cpu:g} CPU and {gpu:g} GPU, but no node has that "
            f"(nodes: {biggest}); lower --cpus-per-trial/--gpus-per-trial, or pass --autoscale if the cluster adds nodes"
        )
    return {"cpu": cpu, "gpu": gpu}


def warn_if_local_storage(storage_path: str) -> None:
    nodes = len(alive_nodes())
    if nodes > 1 and not is_uri(storage_path):
        print(
            f"[study] warning: {storage_path} is a local path on a {nodes}-node cluster; "
            "checkpoints need storage every node shares (s3://, gs://, or NFS mounted at the same path)",
            file=sys.stderr,
        )
