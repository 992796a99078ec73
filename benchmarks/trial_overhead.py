"""What trials cost beyond their compute: many trivial trials, and the quickstart's efficiency.

Runs each measurement with this checkout and, with --before DIR, with another checkout of the
project (e.g. `git worktree add /tmp/before 5421ace`) in the same environment, side by side:

- trivial trials: N trials of 3 epochs of one 64-image step each (synthetic data, a 4-channel
  CNN), 1 CPU each; wall time, trials per second, and lines printed;
- the quickstart: summed epoch_time_s of all trials / (wall time x concurrent trials), run
  --repeats times per checkout, the checkouts taking turns (the median is reported: ASHA's stops,
  and so the work, differ a little from run to run).

    python -m benchmarks.trial_overhead --trials 100 --repeats 3 --before /tmp/before
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

from benchmarks.common import ROOT, Goal, add_out_option, met, record, write_space

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
    add_out_option(parser)
    args = parser.parse_args()
    trees = {"this checkout": ROOT, **({"before": os.path.abspath(args.before)} if args.before else {})}
    rows, figures = [], {}
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
            figures[label] = (wall, lines, statistics.median(efficiencies))
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
    wall, lines, efficiency = figures["this checkout"]
    goals = [
        Goal(
            id="quickstart-efficiency",
            name="quickstart efficiency",
            target=">= 0.6 (summed epoch_time_s / (wall s x 2 slots))",
            figure=f"{efficiency:.2f} (median of {args.repeats} runs)",
            measured={"quickstart_efficiency_median": round(efficiency, 2), "runs": args.repeats},
            verdict=met(efficiency >= 0.6),
        ),
        Goal(
            id="trial-throughput",
            name=f"{args.trials} trivial trials, end to end",
            target=">= 2 trials/s",
            figure=f"{args.trials / wall:.2f} trials/s ({wall:.0f} s)",
            measured={"trials_per_s": round(args.trials / wall, 2), "wall_s": round(wall)},
            verdict=met(args.trials / wall >= 2),
        ),
        Goal(
            id="printed-lines",
            name=f"lines printed for {args.trials} trivial trials",
            target="a few per trial (<= 5)",
            figure=f"{lines} lines",
            measured={"lines_printed": lines, "trials": args.trials},
            verdict=met(lines <= 5 * args.trials),  # "a few": at most 5 a trial
        ),
    ]
    record(
        "trial_overhead", "Trial overhead: trivial trials and the quickstart's efficiency", goals, rows, "", args.out
    )


def search_spaces(tree: str) -> str:
    return os.path.join(tree, "search_spaces")


if __name__ == "__main__":
    main()
