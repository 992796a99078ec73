"""Memory per trial, 2 trials at once on CIFAR-sized data (50k train images).

`cnn` channels 128 (the report's CNN, FC 4096), batch 256. Each trial reports its resident
memory (rss_mb) after every epoch and its peak (peak_rss_mb). Targets: per-trial peak RSS under
1.5 GB, and no copy of the dataset per epoch (RSS flat from one epoch to the next).
Epochs are capped at --steps steps so that the CPU run finishes in minutes; the whole 50k-image
split is still resident and permuted every epoch.

    python -m benchmarks.memory [--steps 20] [--epochs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import ROOT, Goal, add_out_option, met, record, run_space

SPACE = """
name: memory
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: 1}}
space:
  seed: {{grid: [0, 1]}}
  num_train: 50000
  num_test: {num_test}
  epochs: {epochs}
  max_steps_per_epoch: {steps}
  model: cnn
  channels: 128
  fc_width: 4096
  batch_size: 256
  augment: flip+crop
"""


# Resident memory of a fresh Python after each import a trial's worker makes, before any data:
# Ray (the worker runtime), Tune (with the pandas and pyarrow it imports), torch, the trainable,
# and torch._dynamo, which torch.optim imports when the first optimiser is made.
IMPORTS = ["ray", "ray.tune", "torch", "study.tuning.trainable", "torch._dynamo"]
PROBE = """
import importlib, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, rss())
"""


def runtime_rss() -> list[tuple[str, int]]:
    """(module, MiB resident after importing it and those before), in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *IMPORTS], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return [(name, int(mib)) for name, mib in (line.split() for line in out.splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-test", type=int, default=10000)
    add_out_option(parser)
    args = parser.parse_args()

    trials = run_space(SPACE.format(steps=args.steps, epochs=args.epochs, num_test=args.num_test))
    dataset_mb = 50000 * 3 * 32 * 32 / 2**20
    rows, worst, growth = [], 0.0, 0.0
    for name, results in trials.items():
        rss = [r["rss_mb"] for r in results]
        anon = [r["rss_anon_mb"] for r in results]
        peak = results[-1]["peak_rss_mb"]
        worst, growth = max(worst, peak), max(growth, rss[-1] - rss[1])
        rows.append(
            {
                "trial": name,
                "RSS after each epoch (MiB)": " / ".join(f"{v:.0f}" for v in rss),
                "of which private (RssAnon)": " / ".join(f"{v:.0f}" for v in anon),
                "peak RSS (MiB)": f"{peak:.0f}",
                "growth epoch 2 -> last (MiB)": f"{rss[-1] - rss[1]:+.0f}",
            }
        )
    goal = Goal(
        id="peak-rss",
        name="peak RSS per trial, 2 trials at once",
        target="< 1,500 MiB, and no dataset copy per epoch",
        figure=f"{worst:,.0f} MiB (growth {growth:+.0f} MiB)",
        measured={
            "worst_peak_rss_mib": round(worst),
            "rss_growth_mib": round(growth),
            "dataset_mib": round(dataset_mb),
        },
        verdict=met(worst < 1.5 * 1000 and growth < dataset_mb / 2),
    )
    notes = (
        f"2 trials at once (1 CPU each), synthetic 50,000 train / {args.num_test} test images (uint8, "
        f"{dataset_mb:.0f} MiB), cnn 128 / FC 4096 ({17.4:.1f}M params, Adam), batch 256, flip+crop, "
        f"{args.epochs} epochs of {args.steps} steps. RSS includes the Python, torch and Ray worker runtime; 'private' is "
        "its anonymous part (heap, tensors), the rest being file pages (libraries, the memory-mapped "
        "dataset) that the trials on a machine share."
    )
    steps = runtime_rss()
    notes += " Before any data, a fresh Python's RSS after importing " + ", ".join(
        f"{name} {mib:,} MiB" for name, mib in steps
    )
    notes += "; each step includes those before it."
    record("memory", "Memory per trial", [goal], rows, notes, args.out)


if __name__ == "__main__":
    main()
