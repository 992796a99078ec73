"""The trainable under Ray Tune against the same training core in a plain loop.

Same model (cnn, channels 32), same CIFAR-sized synthetic data, same epochs, same threads: once
with 1 thread (a trial per core, how studies run) and once with every core in one trial.
Target: Tune's images/s >= 0.95 x the plain loop's. Also reports the time from `study run` to
the first result.

    python -m benchmarks.tune_overhead [--num-train 10000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.common import Goal, add_out_option, met, read_results, record, run_study, write_space

FIELDS = "model: cnn\n  channels: 32\n  batch_size: 256\n  lr: 0.001\n  augment: flip+crop\n  seed: 0"


def measure(threads: int, args: argparse.Namespace, tmp: str) -> dict:
    """Plain loop and `study run`, both with `threads` CPU threads; returns one table row each."""
    import torch

    from study.config import TrialConfig
    from study.data.datasets import load_dataset
    from study.train import Trainer

    torch.set_num_threads(threads)
    cfg = TrialConfig.from_dict(
        {
            "dataset": "synthetic",
            "num_train": args.num_train,
            "num_test": args.num_test,
            "epochs": args.epochs,
            "model": "cnn",
            "channels": 32,
            "batch_size": 256,
            "lr": 0.001,
            "augment": "flip+crop",
            "seed": 0,
        }
    )
    trainer = Trainer(cfg, load_dataset(**cfg.data_kwargs()))
    plain, plain_epoch_s = [], []
    for _ in range(cfg.epochs):  # the same work per epoch as the trainable: train, evaluate, save
        start = time.perf_counter()
        plain.append(trainer.run_epoch())
        trainer.save(os.path.join(tmp, "plain.pt"))
        plain_epoch_s.append(time.perf_counter() - start)

    space = write_space(
        os.path.join(tmp, f"overhead{threads}.yaml"),
        f"""
name: overhead
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: {threads}}}
space:
  num_train: {args.num_train}
  num_test: {args.num_test}
  epochs: {args.epochs}
  {FIELDS}
""",
    )
    name = f"exp{threads}"
    wall, first = run_study(
        ["run", space, "--storage-path", tmp, "--name", name],
        os.path.join(tmp, f"{name}.log"),
        first_result_glob=os.path.join(tmp, name, "*", "result.json"),
    )
    (tuned,) = read_results(os.path.join(tmp, name)).values()
    # Epoch 1 includes one-off warm-up (allocator, first kernels) in both: compare the rest.
    plain_ips = statistics.mean(r["images_per_s"] for r in plain[1:])
    tune_ips = statistics.mean(r["images_per_s"] for r in tuned[1:])
    # Whole epochs: Tune's time_this_iter_s runs from one report to the next (train, evaluate,
    # checkpoint, tune.report); the plain loop's, train + evaluate + torch.save.
    plain_s = statistics.mean(plain_epoch_s[1:])
    tune_s = statistics.mean(r["time_this_iter_s"] for r in tuned[1:])
    return {
        "threads": threads,
        "plain images/s": f"{plain_ips:.0f}",
        "Tune images/s": f"{tune_ips:.0f}",
        "ratio": f"{tune_ips / plain_ips:.3f}",
        "plain epoch s": f"{plain_s:.2f}",
        "Tune epoch s": f"{tune_s:.2f}",
        "epoch ratio": f"{plain_s / tune_s:.3f}",
        "study run -> first result": f"{first:.1f} s",
        "_ratio": plain_s / tune_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    add_out_option(parser)
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(threads, args, tmp) for threads in sorted({1, cpus})]
    ratios = {r["threads"]: r.pop("_ratio") for r in rows}
    goal = Goal(
        id="tune-overhead",
        name="whole epoch, plain loop / Tune",
        target=">= 0.95",
        figure=", ".join(f"{v:.3f} ({t} thread{'s' if t > 1 else ''})" for t, v in ratios.items()),
        measured={f"epoch_ratio_{t}_threads": round(v, 3) for t, v in ratios.items()},
        verdict=met(all(v >= 0.95 for v in ratios.values())),
    )
    notes = (
        f"cnn channels 32, synthetic {args.num_train} train / {args.num_test} test images (32x32x3), "
        f"flip+crop, batch 256, {args.epochs} epochs, epoch 1 excluded as warm-up. The Tune trial asks for as many "
        "CPUs as the plain loop has threads. 'first result' is from launching `study run` (Python start, "
        "imports, Ray start, trial start, one epoch) to the first row of result.json. 'epoch ratio' is the plain "
        "loop's whole epoch (train, evaluate, torch.save) over Tune's time_this_iter_s (the same plus "
        "tune.report and its checkpoint copy). Target: epoch ratio >= 0.95."
    )
    record("tune_overhead", "Tune overhead", [goal], rows, notes, args.out)


if __name__ == "__main__":
    main()
