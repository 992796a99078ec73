"""Benchmark 4: memory per trial, 2 trials at once on CIFAR-sized data (50k train images).

`cnn` channels 128 (the report's CNN, FC 4096), batch 256. Each trial reports its resident
memory (rss_mb) after every epoch and its peak (peak_rss_mb). Targets: per-trial peak RSS under
1.5 GB, and no copy of the dataset per epoch (RSS flat from one epoch to the next).
Epochs are capped at --steps steps so that the CPU run finishes in minutes; the whole 50k-image
split is still resident and permuted every epoch.

    python benchmarks/memory.py [--steps 20] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import record, run_space  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-test", type=int, default=10000)
    args = parser.parse_args()

    trials = run_space(SPACE.format(steps=args.steps, epochs=args.epochs, num_test=args.num_test))
    dataset_mb = 50000 * 3 * 32 * 32 / 2**20
    rows, worst, growth = [], 0.0, 0.0
    for name, results in trials.items():
        rss = [r["rss_mb"] for r in results]
        peak = results[-1]["peak_rss_mb"]
        worst, growth = max(worst, peak), max(growth, rss[-1] - rss[1])
        rows.append(
            {
                "trial": name,
                "RSS after each epoch (MiB)": " / ".join(f"{v:.0f}" for v in rss),
                "peak RSS (MiB)": f"{peak:.0f}",
                "growth epoch 2 -> last (MiB)": f"{rss[-1] - rss[1]:+.0f}",
            }
        )
    met = worst < 1.5 * 1000 and growth < dataset_mb / 2
    verdict = (
        f"worst per-trial peak RSS {worst:.0f} MiB (target < 1.5 GB); RSS growth after epoch 2 at most "
        f"{growth:+.0f} MiB against a {dataset_mb:.0f} MiB dataset: {'met' if met else 'MISSED'}"
    )
    notes = (
        f"2 trials at once (1 CPU each), synthetic 50,000 train / {args.num_test} test images (uint8, "
        f"{dataset_mb:.0f} MiB), cnn 128 / FC 4096 ({17.4:.1f}M params, Adam), batch 256, flip+crop, "
        f"{args.epochs} epochs of {args.steps} steps. RSS includes the Python, torch and Ray worker runtime."
    )
    record("4. Memory per trial", rows, verdict, notes)


if __name__ == "__main__":
    main()
