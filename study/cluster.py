"""The Ray cluster a study runs on: start or join it, and check that a trial fits a node."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile

from study.errors import StudyError, reason, where
from study.space import StudySpec
from study.storage import is_uri


def local_only_environment() -> dict[str, str]:
    """Environment for a single-machine Ray that nobody else can reach.

    - Every Ray server (GCS, raylet, workers, the runtime-env agent) binds to 127.0.0.1: Ray's
      single-machine mode, which it uses by default on macOS and Windows
      (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 turns it on on Linux too). It must be set before Ray
      is imported.
    - Token authentication is on, with a fresh token for this run, so another user of the same
      machine cannot connect to it either.
    """
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if "RAY_AUTH_MODE" not in os.environ:
        env["RAY_AUTH_MODE"] = "token"
        if "RAY_AUTH_TOKEN" not in os.environ:
            env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT that does not answer is an error in seconds, not a connect that retries for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise StudyError(f"--address {address}: expected 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise StudyError(
            f"--address {address}: no Ray cluster answers there ({reason(exc)}); is `ray start --head` running?"
        ) from None


def private_temp_dir() -> str:
    """Ray's temporary folder for the local Ray that `study` starts: RAY_TMPDIR where the user set
    it, else `study-ray-<uid>` in the system's temporary folder (short: Ray's unix sockets live in
    it, and their paths must stay under 107 bytes).

    Ray makes its own `ray/`, session, `sockets/` and `logs/` folders in it world-writable (0777,
    no sticky bit), where Tune stages state before `study` signs it. Inside a folder that only
    this user can enter (0700) no other user reaches them. A folder another user owns, or that
    others can enter, is refused: they may have planted entries in it.
    """
    folder = os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), f"study-ray-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StudyError(f"{folder}: cannot make Ray's temporary folder ({exc.strerror})") from None
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise StudyError(f"{folder}: Ray's temporary folder is not a folder (a link or a file); remove it")
    if info.st_uid != os.getuid():
        raise StudyError(
            f"{folder}: Ray's temporary folder belongs to another user (uid {info.st_uid}); remove it, "
            "or set RAY_TMPDIR to a folder of your own"
        )
    if info.st_mode & 0o077:  # others could have entered it, and Ray's folders inside are 0777
        raise StudyError(
            f"{folder}: Ray's temporary folder is open to other users (mode {stat.S_IMODE(info.st_mode):o}); "
            "check what is in it and make it private (chmod 700), or set RAY_TMPDIR to a private folder"
        )
    return folder


# When the first driver connects, Ray starts an idle worker process per CPU, ready for tasks. Tune
# runs each trial in an actor with its own runtime environment (Tune's env_vars), which Ray never
# gives such a worker: it starts new ones. The idle ones would only compete with the study's start
# for the cores.
SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


# Whether this process started the Ray it runs on (a local one), and so should stop it.
started_here = False


def connect(address: str | None) -> None:
    """Start a local, loopback-only Ray (no dashboard, its files in a private folder), or join
    the cluster at `address`.

    A cluster given by --address keeps Ray's own settings (see docs/cluster.md).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phone-home from offline machines
    if address and address != "auto":
        check_reachable(address)
    if not address and "ray" not in sys.modules:
        os.environ.update(local_only_environment())
    import ray

    if ray.is_initialized():
        return
    if address:
        # A cluster's workers do not inherit this process's environment: a cache folder given
        # here (--cache-dir) goes to them with the job.
        cache = {"STUDY_CACHE_DIR": os.environ["STUDY_CACHE_DIR"]} if os.environ.get("STUDY_CACHE_DIR") else {}
        try:
            ray.init(address=address, logging_level="WARNING", runtime_env={"env_vars": cache} if cache else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = " (is RAY_AUTH_MODE=token set, as for `ray start`?)" if "auth" in str(exc).lower() else ""
            raise StudyError(f"--address {address}: cannot connect to the Ray cluster: {reason(exc)}{hint}") from None
    else:
        os.environ["RAY_TMPDIR"] = private_temp_dir()  # before Ray's processes start: they inherit it
        ray.init(
            include_dashboard=False,
            configure_logging=True,
            logging_level="WARNING",
            _system_config=SYSTEM_CONFIG,
        )
        global started_here
        started_here = True


def release() -> None:
    """Stop the local Ray this process started, now that the study needs it no more.

    Before the tables, so that what Ray's workers print as they stop comes before them, not in
    their midst; and sooner than at exit, where Ray first sleeps 0.5 s for its logs.
    A cluster joined with --address stays up.
    """
    global started_here
    if started_here:
        import ray

        started_here = False
        stop_monitor()
        ray.shutdown()


def stop_monitor() -> None:
    """SIGKILL the autoscaler monitor of the local Ray this process started, by its own PID.

    `ray.shutdown` stops the raylet and the GCS first, then sends the monitor SIGTERM, on which it
    reports its own end to the GCS that is gone, hangs, and is SIGKILLed a second later: a second
    of every study's exit. A local study never
    autoscales, so the monitor has nothing to finish. If Ray's private process table changes,
    this does nothing and Ray stops the monitor its own way.
    """
    try:
        from ray._private import ray_constants, worker

        monitors = worker._global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
    except (ImportError, AttributeError):
        return
    for info in monitors:
        if info.process.poll() is None:
            info.process.kill()
            try:
                info.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # Ray's own stop deals with it
                pass


def check_local_cpus(spec: StudySpec, address: str | None, autoscale: bool) -> None:
    """Before starting a local Ray: a trial that asks for more CPUs than this machine has is an
    error now, not after Ray's start (a local Ray never has more CPUs than the machine)."""
    if address or autoscale or ("ray" in sys.modules and sys.modules["ray"].is_initialized()):
        return
    cpu, machine = spec.resources.cpu, os.cpu_count() or 1
    if cpu is not None and cpu > machine:
        raise StudyError(
            f"{where(spec.source, 'resources.cpu')}each trial asks for {cpu:g} CPU, but this machine has "
            f"{machine}; lower --cpus-per-trial, or pass --address to run on a cluster"
        )


def alive_nodes() -> list[dict[str, float]]:
    import ray

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
    if gpu == 0 and spec.wants_cuda():
        raise StudyError(
            f"{where(spec.source, 'space.device')}'cuda' needs a GPU in each trial, but trials ask for 0 GPUs "
            f"({'resources.gpu is 0' if spec.resources.gpu == 0 else 'no node has a GPU'}); "
            "use device auto or cpu, or give trials a GPU (--gpus-per-trial)"
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
