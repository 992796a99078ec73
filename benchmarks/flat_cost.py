"""Cost per result from 100 to 1,000 trivial trials, on a simulated cluster.

The cluster is 4 `ray start` nodes on this machine (token auth, own --temp-dir), each declaring
2 CPUs and 8 logical GPUs; every trial asks 1 CPU and 0.25 GPU (so up to 8 run at once) and
trains on the CPU: 3 epochs of one 64-image step (synthetic data, a 4-channel CNN).

For each size, the driver (`study run --address ...`) runs in a wrapper that reads its own
/proc/self/io and getrusage at exit. Reported per result (one result = one reported epoch):
- the driver's CPU seconds (user + system, its own process only: Tune's controller, callbacks,
  loggers, the state saves and the state backup);
- the bytes the driver wrote (`wchar`: every file it wrote, results and logs included, so an
  upper bound on the state bytes);
- and the size of the final experiment_state file.

    python -m benchmarks.flat_cost --sizes 100 1000
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

from benchmarks.common import ROOT, Goal, add_out_option, met, record, write_space
from benchmarks.processes import stop_cluster
from benchmarks.trial_overhead import TRIVIAL as TRIVIAL_TRIAL

# trial_overhead.py's trivial trial, with a quarter of a (logical) GPU each.
TRIVIAL = TRIVIAL_TRIAL.replace("name: trivial", "name: flat").replace("{{cpu: 1}}", "{{cpu: 1, gpu: 0.25}}")

# Runs `study` in this process and records what the process itself did, at exit.
WRAPPER = """
import json, os, resource, sys, time
start = time.perf_counter()
from study.cli import main
try:
    code = main(sys.argv[2:])
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    json.dump({"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
               "wchar": int(io["wchar"]), "write_bytes": int(io["write_bytes"]),
               "peak_rss_mb": usage.ru_maxrss / 1024}, open(sys.argv[1], "w"))
sys.exit(code)
"""


class SimulatedCluster:
    def __init__(self, nodes: int, cpus: int, gpus: int) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rf", dir="/tmp")
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        resources = [f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--disable-usage-stats"]
        out = self.start([ray_cli, "start", "--head", "--port=0", f"--temp-dir={self.temp_dir}",
                          "--include-dashboard=false", *resources])  # fmt: skip
        self.address = re.search(r"ray start --address='([^']+)'", out).group(1)
        for _ in range(nodes - 1):
            self.start([ray_cli, "start", f"--address={self.address}", *resources])

    def start(self, cmd: list[str]) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            self.stop()
            raise SystemExit(proc.stdout + proc.stderr)
        return proc.stdout + proc.stderr

    def stop(self) -> None:
        """Stop this cluster's processes by PID (those naming its temp dir), nothing else."""
        stop_cluster(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def state_note(sizes: list[int]) -> str:
    if "TUNE_GLOBAL_CHECKPOINT_S" in os.environ:
        return f"{os.environ['TUNE_GLOBAL_CHECKPOINT_S']} s (TUNE_GLOBAL_CHECKPOINT_S, set for this run)"
    try:
        from study.tuning.settings import state_save_period
    except ImportError:  # a checkout from before the period existed
        return "step (TUNE_GLOBAL_CHECKPOINT_S=0, as study set it then)"
    return (
        ", ".join(f"{state_save_period(n):g} s at {n} trials" for n in sizes)
        + " (study.tuning.settings.state_save_period)"
    )


def count_results(exp: str) -> int:
    total = 0
    for path in glob.glob(os.path.join(exp, "*", "result.json")):
        with open(path) as f:
            total += sum(1 for line in f if line.strip())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--nodes", type=int, default=4)
    add_out_option(parser)
    args = parser.parse_args()
    cluster = SimulatedCluster(args.nodes, cpus=2, gpus=8)
    rows = []
    tmp = tempfile.mkdtemp(prefix="flat_cost-")  # kept when something fails, for its logs
    try:
        for trials in args.sizes:
            space = write_space(os.path.join(tmp, f"flat{trials}.yaml"), TRIVIAL.format(trials=trials))
            stats_path = os.path.join(tmp, f"stats{trials}.json")
            log = os.path.join(tmp, f"flat{trials}.log")
            cmd = [sys.executable, "-c", WRAPPER, stats_path, "run", space, "--address", cluster.address,
                   "--storage-path", tmp, "--name", f"flat{trials}"]  # fmt: skip
            with open(log, "w") as f:
                code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=cluster.env, cwd=ROOT)
            if code not in (0, 1):  # 1: the study ran, some trials failed (counted below)
                raise SystemExit(f"{trials} trials: study exited {code}; see {log}")
            with open(stats_path) as f:
                stats = json.load(f)
            exp = os.path.join(tmp, f"flat{trials}")
            results = count_results(exp)
            state = max(glob.glob(os.path.join(exp, "experiment_state-*.json")), key=os.path.getmtime)
            rows.append(
                {
                    "trials": trials,
                    "failed trials": len(glob.glob(os.path.join(exp, "*", "error.txt"))),
                    "results": results,
                    "wall s": f"{stats['wall_s']:.0f}",
                    "trials/s": f"{trials / stats['wall_s']:.2f}",
                    "driver CPU ms/result": f"{1000 * stats['cpu_s'] / results:.1f}",
                    "driver wall ms/result": f"{1000 * stats['wall_s'] / results:.1f}",
                    "driver KB written/result": f"{stats['wchar'] / 1e3 / results:.1f}",
                    "final state KB": f"{os.path.getsize(state) / 1e3:.0f}",
                    "driver peak RSS MiB": f"{stats['peak_rss_mb']:.0f}",
                }
            )
            print(rows[-1], flush=True)
    finally:
        cluster.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    small, big = rows[0], rows[-1]

    def ratio(key: str) -> float:
        return float(big[key]) / float(small[key])

    cpu, written = ratio("driver CPU ms/result"), ratio("driver KB written/result")
    goal = Goal(
        id="flat-cost",
        name=f"cost per result, {small['trials']} -> {big['trials']} trials",
        target="driver CPU and bytes written per result within 2x",
        figure=f"CPU/result x{cpu:.2f}, bytes/result x{written:.2f}",
        measured={"driver_cpu_per_result_ratio": round(cpu, 2), "driver_bytes_per_result_ratio": round(written, 2)},
        verdict=met(cpu <= 2 and written <= 2),
    )
    record(
        "flat_cost",
        f"Flat cost per result: {args.nodes} simulated nodes (2 CPU, 8 logical GPUs each), trials at 0.25 GPU",
        [goal],
        rows,
        f"Tune's state saved every {state_note(args.sizes)}.",
        args.out,
    )


if __name__ == "__main__":
    main()
