"""What trials cost beyond their compute: many trivial trials, and the quickstart's efficiency.

Runs each measurement with this checkout and, with --before DIR, with another checkout of the
project (e.g. `git worktree add /tmp/before 5421ace`) in the same environment, side by side:

- trivial trials: N trials of 3 epochs of one 64-image step each (synthetic data, a 4-channel
  CNN), 1 CPU each; wall time, trials per second, and lines printed;
- the quickstart: summed epoch_time_s of all trials / (wall time x concurrent trials), run
  --repeats times per checkout, the checkouts taking turns (the median is reported: ASHA's stops,
  and so the work, differ a little from run to run).

    python benchmarks/trial_overhead.py --trials 100 --repeats 3 --before /tmp/before
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, record, write_space  # noqa: E402

TRIVIAL = """
name: trivial
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: 1}}
num_samples: {trials}
space:
  epochs: 3
  max_steps_per_epoch: 1
  batch_size: 64
  model: cnn
  channels: 4
  fc_width: 16
  num_train: 256
  num_test: 64
"""


def run(tree: str, args: list[str], log_path: str) -> float:
    """Wall seconds of `study ARGS` run from `tree` (its package first on the path)."""
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "study", *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree
        )
    if code != 0:
        raise SystemExit(f"study {' '.join(args)} failed in {tree} (rc {code}); see {log_path}")
    return time.perf_counter() - start


def epoch_seconds(exp: str) -> float:
    total = 0.0
    for path in glob.glob(os.path.join(exp, "*", "result.json")):
        with open(path) as f:
            total += sum(json.loads(line)["epoch_time_s"] for line in f if line.strip())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="quickstart runs per checkout")
    parser.add_argument("--before", help="another checkout to compare with, in the same environment")
    args = parser.parse_args()
    trees = {"this checkout": ROOT, **({"before": os.path.abspath(args.before)} if args.before else {})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        space = write_space(os.path.join(tmp, "trivial.yaml"), TRIVIAL.format(trials=args.trials))
        quick_runs: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
        for i in range(args.repeats):
            for label, tree in trees.items():
                out = os.path.join(tmp, label.replace(" ", "_"))
                quick_log = os.path.join(tmp, f"{label}-quick.log")
                quick = os.path.join(search_spaces(tree), "quickstart.yaml")
                quick_wall = run(tree, ["run", quick, "--storage-path", out, "--name", f"q{i}"], quick_log)
                quick_runs[label].append((quick_wall, epoch_seconds(os.path.join(out, f"q{i}"))))
        for label, tree in trees.items():
            out = os.path.join(tmp, label.replace(" ", "_"))
            log = os.path.join(tmp, f"{label}-trivial.log")
            wall = run(tree, ["run", space, "--storage-path", out, "--name", "t"], log)
            with open(log) as f:
                lines = sum(1 for _ in f)
            runs = quick_runs[label]
            efficiencies = [epochs / (quick_wall * 2) for quick_wall, epochs in runs]  # 2 trials at once
            rows.append(
                {
                    "code": label,
                    f"{args.trials} trivial trials: wall s": f"{wall:.0f}",
                    "trials/s": f"{args.trials / wall:.2f}",
                    "lines printed": lines,
                    "quickstart wall s (each run)": ", ".join(f"{w:.1f}" for w, _ in runs),
                    "summed epoch s (each run)": ", ".join(f"{e:.1f}" for _, e in runs),
                    "quickstart efficiency (median)": f"{statistics.median(efficiencies):.2f}",
                }
            )
    now = rows[0]
    verdict = (
        f"throughput {now['trials/s']} trials/s (goal >= 2); quickstart efficiency {now['quickstart efficiency (median)']} "
        "(goal >= 0.6)"
    )
    record("Trial overhead: trivial trials and the quickstart's efficiency", rows, verdict)


def search_spaces(tree: str) -> str:
    return os.path.join(tree, "search_spaces")


if __name__ == "__main__":
    main()
