"""From a checked `StudySpec` to a running Ray Tune experiment, and back again on resume."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

import pyarrow.fs
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from study.errors import StudyError, reason, where
from study.progress import EtaCallback
from study.state_backup import StateBackup
from study.space import Domain, StudySpec, parse_spec
from study.trainable import META_KEY, VARIANT_KEY, train_trial

SPEC_FILE = "study.yaml"  # the checked spec (file + CLI overrides), saved in the experiment folder


# --- Tune objects from a spec --------------------------------------------------------------


def to_tune_domain(domain: Domain) -> Any:
    kind, values = domain.kind, list(domain.values)
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    if kind == "uniform":
        return tune.uniform(*values)
    if kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(*values)  # [low, high): high is exclusive, as in Tune


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param_space: the searched fields, the named variants, and the study's metadata."""
    space: dict[str, Any] = {
        k: to_tune_domain(v) if isinstance(v, Domain) else v for k, v in spec.space.items()
    }
    space["dataset"] = spec.dataset
    if spec.variants:
        space[VARIANT_KEY] = tune.grid_search([{"name": n, **o} for n, o in spec.variants.items()])
    # Constant across trials; lands in every trial's params.json so the analysis needs no side file.
    space[META_KEY] = {
        "experiment": spec.name, "baseline": spec.baseline, "max_t": spec.max_epochs(),
        "variants": list(spec.variants),  # the file's order, for the tables
    }  # fmt: skip
    return space


def make_scheduler(spec: StudySpec):
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    s = spec.scheduler
    # time_attr "epoch" (our own counter) survives restore; the trainable reports it every epoch.
    return ASHAScheduler(
        time_attr="epoch", max_t=spec.max_epochs(), grace_period=min(s.grace_period, spec.max_epochs()),
        reduction_factor=s.reduction_factor,
    )  # fmt: skip


def make_search(spec: StudySpec):
    if spec.search.type != "optuna":
        if spec.search.seed is None:
            return None  # Tune's default BasicVariantGenerator: grid points x random samples
        # The same seed draws the same random samples, so two runs (e.g. ASHA vs FIFO) compare alike.
        return BasicVariantGenerator(random_state=spec.search.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=spec.search.max_concurrent)


def make_trainable(resources: dict[str, float]):
    return tune.with_resources(train_trial, resources)


def run_config(spec: StudySpec, storage_path: str, run_name: str) -> tune.RunConfig:
    return tune.RunConfig(
        name=run_name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
        verbose=1,  # Ray's status table only, not every trial's result box
        callbacks=[StateBackup(join(storage_path, run_name)), EtaCallback(spec.num_trials(), spec.max_epochs())],
    )


def trial_name(trial) -> str:
    """Short, readable trial names: "cnn64-s1-00004" (variant, seed, trial number)."""
    variant = (trial.config.get(VARIANT_KEY) or {}).get("name", "trial")
    return f"{variant}-s{trial.config.get('seed', 0)}-{trial.trial_id.split('_')[-1]}"


def make_tuner(spec: StudySpec, storage_path: str, run_name: str, resources: dict[str, float]) -> tune.Tuner:
    return tune.Tuner(
        make_trainable(resources),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, scheduler=make_scheduler(spec),
            search_alg=make_search(spec), num_samples=spec.num_samples,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),  # fmt: skip
        run_config=run_config(spec, storage_path, run_name),
    )


# --- storage -------------------------------------------------------------------------------


def normalize_storage(path: str) -> str:
    """Ray wants an absolute local path or a URI (s3://, gs://, file://...)."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def join(storage: str, *parts: str) -> str:
    return "/".join([storage.rstrip("/"), *parts])


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    try:
        return pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise StudyError(f"{uri}: cannot open this storage path ({reason(exc)})") from None


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def save_spec(spec: StudySpec, experiment_path: str) -> None:
    fs, path = filesystem(experiment_path)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{SPEC_FILE}") as f:
        f.write(yaml.safe_dump({**spec.raw, "name": spec.name}, sort_keys=False).encode())


def read_spec(experiment_path: str) -> StudySpec:
    fs, path = filesystem(experiment_path)
    try:
        with fs.open_input_stream(f"{path}/{SPEC_FILE}") as f:
            raw = yaml.safe_load(f.read().decode())
    except (FileNotFoundError, OSError):
        raise StudyError(f"{experiment_path}: not a study experiment folder (no {SPEC_FILE}); give the folder `study run` printed") from None
    return parse_spec(raw, join(experiment_path, SPEC_FILE), {})


def latest_run(storage_path: str, name: str) -> str | None:
    """The newest `NAME-YYYYmmdd-HHMMSS` folder (or NAME itself) under storage_path."""
    fs, path = filesystem(storage_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    runs = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                  and (i.base_name == name or i.base_name.startswith(name + "-")))  # fmt: skip
    return join(storage_path, runs[-1]) if runs else None


def default_run_name(spec: StudySpec) -> str:
    return f"{spec.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# --- the Ray cluster -----------------------------------------------------------------------


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
        print("[study] warning: no GPU node is up yet, so trials ask for 0 GPUs; pass --gpus-per-trial "
              "(e.g. 0.25) for the autoscaler to start GPU nodes", file=sys.stderr)  # fmt: skip
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
    if len(alive_nodes()) > 1 and "://" not in storage_path:
        print(
            f"[study] warning: {storage_path} is a local path on a {len(alive_nodes())}-node cluster; "
            "checkpoints need storage every node shares (s3://, gs://, or NFS mounted at the same path)",
            file=sys.stderr,
        )


def verify_checkpoints(experiment_path: str) -> int:
    """Load the newest checkpoint of every trial (weights_only); a corrupt one is a StudyError.

    Runs before a resume so that a damaged file costs one line, not trials that crash and retry.
    Local folders only (a URI is checked by the trials themselves). Returns the number checked.
    """
    import glob

    import torch

    from study.trainable import CHECKPOINT_FILE

    if "://" in experiment_path:
        return 0
    checked = 0
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        checkpoints = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if not checkpoints:
            continue
        path = os.path.join(checkpoints[-1], CHECKPOINT_FILE)
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, foreign pickle, missing file: all mean "corrupt"
            raise StudyError(
                f"{path}: corrupt checkpoint ({reason(exc, 100)}); delete that checkpoint_* folder "
                "to resume the trial from the one before it"
            ) from None
        checked += 1
    return checked
