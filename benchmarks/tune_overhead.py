"""Benchmark 1: the trainable under Ray Tune against the same training core in a plain loop.

Same model (cnn, channels 32), same CIFAR-sized synthetic data, same epochs, same threads (the
Tune trial gets both cores). Target: Tune's images/s >= 0.95 x the plain loop's. Also reports
the time from `study run` to the first result.

    python benchmarks/tune_overhead.py [--num-train 10000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read_results, record, run_study, write_space  # noqa: E402

FIELDS = "model: cnn\n  channels: 32\n  batch_size: 256\n  lr: 0.001\n  augment: flip+crop\n  seed: 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import torch

    from study.config import TrialConfig
    from study.data import load_dataset
    from study.train import Trainer

    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    cfg = TrialConfig.from_dict({
        "dataset": "synthetic", "num_train": args.num_train, "num_test": args.num_test, "epochs": args.epochs,
        "model": "cnn", "channels": 32, "batch_size": 256, "lr": 0.001, "augment": "flip+crop", "seed": 0,
    })  # fmt: skip
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.num_train, cfg.num_test)
    trainer = Trainer(cfg, data)
    start = time.perf_counter()
    plain = [trainer.run_epoch() for _ in range(cfg.epochs)]
    plain_wall = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        space = write_space(os.path.join(tmp, "overhead.yaml"), f"""
name: overhead
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: {cpus}}}
space:
  num_train: {args.num_train}
  num_test: {args.num_test}
  epochs: {args.epochs}
  {FIELDS}
""")
        wall, first = run_study(
            ["run", space, "--storage-path", tmp, "--name", "exp"], os.path.join(tmp, "log"),
            first_result_glob=os.path.join(tmp, "exp", "*", "result.json"),
        )  # fmt: skip
        (tuned,) = read_results(os.path.join(tmp, "exp")).values()

    # Epoch 1 includes one-off warm-up (allocator, first kernels) in both: compare the rest.
    plain_ips = statistics.mean(r["images_per_s"] for r in plain[1:])
    tune_ips = statistics.mean(r["images_per_s"] for r in tuned[1:])
    plain_epoch = statistics.mean(r["epoch_time_s"] for r in plain[1:])
    tune_epoch = statistics.mean(r["epoch_time_s"] for r in tuned[1:])
    ratio = tune_ips / plain_ips
    rows = [
        {"run": "plain loop (Trainer)", "images/s": f"{plain_ips:.0f}", "epoch s": f"{plain_epoch:.2f}", "wall s": f"{plain_wall:.1f}", "first result s": "-"},
        {"run": "Ray Tune (study run)", "images/s": f"{tune_ips:.0f}", "epoch s": f"{tune_epoch:.2f}", "wall s": f"{wall:.1f}", "first result s": f"{first:.1f}"},
    ]  # fmt: skip
    verdict = f"images/s ratio Tune / plain = {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})"
    notes = (f"cnn channels 32, synthetic {args.num_train} train / {args.num_test} test images (32x32x3), "
             f"flip+crop, batch 256, {args.epochs} epochs, epoch 1 excluded as warm-up; both use {cpus} threads. "
             "'first result s' is from launching `study run` (Python start, imports, Ray start, trial start, "
             "one epoch) to the first row of result.json.")  # fmt: skip
    record("1. Tune overhead", rows, verdict, notes)


if __name__ == "__main__":
    main()
