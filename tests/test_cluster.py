"""Ray clusters started with `ray start` on this one machine: 2 nodes, token auth, GPU packing.

Every process a cluster starts carries its own --temp-dir in its command line; the fixtures find
them (and their children) by that and stop them by PID, so no other Ray on the machine is touched.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from benchmarks.processes import stop_cluster
from tests.processes import experiment_rows, free_port

ROOT = os.path.join(os.path.dirname(__file__), "..")


class Cluster:
    """`ray start --head` plus `ray start --address` workers, all with RAY_AUTH_MODE=token."""

    def __init__(self, head_args: list[str], worker_args: list[list[str]]) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets live here
        # A token made for this cluster alone: a fresh machine has no ~/.ray/auth_token, and the
        # test must not depend on (or overwrite) the user's own.
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, **token, "RAY_USAGE_STATS_ENABLED": "0"}
        try:
            out = self.ray_start(
                [
                    "--head",
                    f"--port={free_port()}",
                    f"--temp-dir={self.temp_dir}",
                    "--include-dashboard=false",
                    *head_args,
                ]
            )
            self.address = re.search(r"ray start --address='([^']+)'", out).group(1)
            for args in worker_args:
                self.ray_start([f"--address={self.address}", *args])
        except BaseException:
            self.stop()
            raise

    def ray_start(self, args: list[str]) -> str:
        import sys

        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")  # the ray of this Python
        proc = subprocess.run(
            [ray_cli if os.path.exists(ray_cli) else "ray", "start", "--disable-usage-stats", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def study(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        import sys

        return subprocess.run(
            [sys.executable, "-m", "study", *args, "--address", self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        """Stop this cluster's processes, then remove its folder (Ray's sockets, session logs)."""
        stop_cluster(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


SMALL = """
name: nodes
dataset: synthetic
scheduler: {type: fifo}
space:
  seed: {grid: [0, 1, 2, 3]}
  epochs: 2
  model: cnn
  channels: 8
  fc_width: 32
  num_train: 512
  num_test: 128
"""


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(["--num-cpus=1"], [["--num-cpus=1"]])
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_study_spreads_trials_over_both_nodes(two_nodes, write_yaml, tmp_path):
    shared = tmp_path / "shared"  # one folder both nodes see: they share this machine's disk
    proc = two_nodes.study("run", write_yaml(SMALL), "--storage-path", str(shared), "--name", "nodes")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "local path on a 2-node cluster" in proc.stderr  # the shared-storage warning
    trials = experiment_rows(str(shared / "nodes"))
    assert len(trials) == 4 and all(rows[-1]["epoch"] == 2 for rows in trials.values())
    nodes = {rows[-1]["node_id"] for rows in trials.values()}
    assert len(nodes) == 2, nodes
    import pandas as pd

    compute = pd.read_csv(shared / "nodes" / "analysis" / "compute.csv")
    assert compute["nodes"][0] == 2


@pytest.mark.slow
def test_trial_bigger_than_any_node_fails_at_once(two_nodes, write_yaml, tmp_path):
    # The cluster has 2 CPUs in all but no node has 2: Ray would leave such a trial PENDING forever.
    start = time.time()
    proc = two_nodes.study("run", write_yaml(SMALL), "--cpus-per-trial", "2", "--storage-path", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert (
        "resources.cpu: each trial asks for 2 CPU and 0 GPU, but no node has that (nodes: 1 CPU/0 GPU, 1 CPU/0 GPU)"
        in proc.stderr
    )
    assert time.time() - start < 60 and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_fractional_gpus_pack_four_trials_on_one_gpu(write_yaml, tmp_path):
    # A logical GPU: Ray schedules on it like a real one; the trials themselves train on CPU here.
    cluster = Cluster(["--num-cpus=4", "--num-gpus=1"], [])
    try:
        # Long enough (~10 s a trial) that staggered actor starts and whole-second timestamps don't matter.
        space = write_yaml(
            SMALL.replace("epochs: 2", "epochs: 4")
            .replace("num_train: 512", "num_train: 4096")
            .replace("channels: 8", "channels: 16")
        )
        proc = cluster.study(
            "run", space, "--gpus-per-trial", "0.25", "--storage-path", str(tmp_path), "--name", "packed"
        )
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 CPU + 0.25 GPU each" in proc.stdout
    spans = []
    for rows in experiment_rows(str(tmp_path / "packed")).values():
        first, last = rows[0], rows[-1]
        spans.append((first["timestamp"] - first["time_total_s"], last["timestamp"]))
    assert len(spans) == 4
    latest_start, earliest_end = max(s for s, _ in spans), min(e for _, e in spans)
    assert latest_start < earliest_end, f"the 4 trials never ran at the same time: {spans}"


def test_cluster_yaml_matches_rays_schema_and_asks_for_gpus():
    import jsonschema
    import ray

    schema_path = os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        config = yaml.safe_load(f)
    jsonschema.validate(config, schema)
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert workers and all(v["resources"].get("GPU", 0) >= 1 for v in workers.values())
    assert all(v.get("min_workers", 0) == 0 for v in workers.values())
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert commands.count("RAY_AUTH_MODE=token") == 2
    assert any("pip install" in c and "cifar-study" in c for c in config["setup_commands"])
    text = open(os.path.join(ROOT, "cluster.yaml")).read()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key", text)  # no credentials


def test_onprem_file_matches_rays_schema_and_shares_the_aws_files_setup():
    import jsonschema
    import ray

    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    files = {}
    for name in ("cluster.yaml", "cluster-onprem.yaml"):
        with open(os.path.join(ROOT, name)) as f:
            files[name] = yaml.safe_load(f)
    onprem, aws = files["cluster-onprem.yaml"], files["cluster.yaml"]
    jsonschema.validate(onprem, schema)
    assert onprem["provider"]["type"] == "local" and "available_node_types" not in onprem  # Ray refuses it
    # Copy the checkout, install it, token auth on every `ray start`: the same in both files.
    for key in ("file_mounts", "rsync_exclude", "setup_commands"):
        assert onprem[key] == aws[key], key
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        same = [c.split(" ${STUDY_NODE_GPUS")[0].replace("RAY_enable_autoscaler_v2=0 ", "") for c in onprem[key]]
        assert same == aws[key], key
        assert "--num-gpus=$STUDY_NODE_GPUS" in onprem[key][-1]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_files_copy_the_signing_key_to_every_node(name, tmp_path, monkeypatch):
    """Trials sign their checkpoints with the user's key, found where the driver finds it."""
    from study.trust import signing

    with open(os.path.join(ROOT, name)) as f:
        mounts = yaml.safe_load(f)["file_mounts"]
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    where = signing.secret_path().replace(str(tmp_path), "~", 1)
    assert mounts.get(where) == where  # the same path on the nodes as on your machine


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_files_comment_every_key(name):
    with open(os.path.join(ROOT, name)) as f:
        lines = f.read().splitlines()
    is_key = [bool(re.match(r"^\s*-?\s*[A-Za-z_\"~.][^:#]*:(\s|$)", line)) for line in lines]
    # Every key, a block's opening key too, has its comment on its own line or on the line above.
    bare = [
        line
        for i, line in enumerate(lines)
        if is_key[i] and "#" not in line and not (i and lines[i - 1].lstrip().startswith("#"))
    ]
    assert not bare, f"keys without a comment: {bare}"


# A local Ray started by `study`, stopped by study.cluster.release: which of its processes were
# still running when Ray's own stop came to them, and which run after it.
STOP_PROBE = """
import json
from study.cluster import connect, release
connect(None)
from ray._private import node, worker
processes = {kind: [i.process for i in infos] for kind, infos in worker._global_node.all_processes.items()}
alive_when_reached = {}
kill = node.Node._kill_process_impl
def record(self, kind, **kwargs):
    alive_when_reached[kind] = any(p.poll() is None for p in processes[kind])
    kill(self, kind, **kwargs)
node.Node._kill_process_impl = record
release()
running = [p.pid for ps in processes.values() for p in ps if p.poll() is None]
print(json.dumps({"alive_when_reached": alive_when_reached, "running": running}))
"""


@pytest.mark.slow
def test_the_local_ray_stops_whole_with_its_monitor_killed_first():
    # Ray's autoscaler monitor hangs on SIGTERM once the GCS is gone, until Ray SIGKILLs it a
    # second later; release() kills it first. Every process the local Ray started is gone after.
    proc = subprocess.run([sys.executable, "-c", STOP_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["running"] == []
    assert out["alive_when_reached"]["monitor"] is False
    assert out["alive_when_reached"]["raylet"] is True  # the rest stop Ray's own way
