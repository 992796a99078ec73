"""GPU only: epoch times fp32 vs bf16, 1 trial vs 4 packed, and a wall-time estimate.

Prepared for a machine with a CUDA GPU (the `device` tool's H200 when a session is lent one);
`--smoke` runs the same code on CPU at toy sizes, to check the script before spending GPU time.
Everything is measured in one run of at most a few minutes and recorded in benchmarks/results/gpu.json.

    python -m benchmarks.gpu            # on the GPU machine
    python -m benchmarks.gpu --smoke --out /tmp/gpu-smoke  # anywhere, tiny sizes
"""

from __future__ import annotations

import argparse
import os
import tempfile

from benchmarks.common import RESULTS, ROOT, Goal, add_out_option, met, read_results, record, run_study, write_space


def epoch_seconds(model_fields: dict, precision: str, n_train: int, n_test: int, steps: int, batch: int) -> float:
    """Seconds for one CIFAR-sized epoch (train + eval), timed on `steps` steps and scaled."""
    import torch

    from study.config import TrialConfig
    from study.data.datasets import load_dataset
    from study.train import Trainer

    cfg = TrialConfig.from_dict(
        {
            "dataset": "synthetic",
            "num_train": n_train,
            "num_test": n_test,
            "batch_size": batch,
            "augment": "flip+crop",
            "precision": precision,
            "max_steps_per_epoch": steps,
            **model_fields,
        }
    )
    trainer = Trainer(cfg, load_dataset(**cfg.data_kwargs()))
    trainer.run_epoch()  # warm-up: cuDNN autotuning, allocator
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    metrics = trainer.run_epoch()
    train_s = steps * batch / metrics["images_per_s"]
    eval_s = metrics["epoch_time_s"] - train_s
    full_steps = (n_train + batch - 1) // batch
    return train_s * full_steps / steps + eval_s


def packed_throughput(n_trials: int, gpu_share: float, n_train: int, epochs: int, steps: int, tmp: str) -> float:
    """Total training images/s of `n_trials` cnn(128) trials sharing the GPU through Ray."""
    space = write_space(
        os.path.join(tmp, f"pack{n_trials}.yaml"),
        f"""
name: pack{n_trials}
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: {gpu_share}}}
space:
  seed: {{grid: {list(range(n_trials))}}}
  num_train: {n_train}
  num_test: 1000
  epochs: {epochs}
  max_steps_per_epoch: {steps}
  model: cnn
  channels: 128
  augment: flip+crop
""",
    )
    run_study(
        ["run", space, "--storage-path", tmp, "--name", f"pack{n_trials}"], os.path.join(tmp, f"pack{n_trials}.log")
    )
    trials = read_results(os.path.join(tmp, f"pack{n_trials}"))
    # Images trained by all trials over the whole span from the first start to the last end:
    # a sum of each trial's own images/s would count trials that never overlapped as parallel.
    start = min(rows[0]["timestamp"] - rows[0]["time_total_s"] for rows in trials.values())
    end = max(rows[-1]["timestamp"] for rows in trials.values())
    per_epoch = min(n_train, steps * 256)  # TrialConfig's default batch_size (256), which the space keeps
    images = sum(len(rows) * per_epoch for rows in trials.values())
    return images / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes; refused with the default --out")
    add_out_option(parser)
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --smoke to check the script on CPU")
    if args.smoke and os.path.abspath(args.out) == RESULTS:
        raise SystemExit("--smoke needs --out DIR: toy sizes must not replace the recorded result")
    # Smoke sizes are tiny: bf16 convolutions on a CPU without bf16 units are emulated and slow.
    n_train, n_test, steps, batch = (64, 32, 2, 16) if args.smoke else (50000, 10000, 50, 256)
    models = {
        "cnn 128": {"model": "cnn", "channels": 128},
        "resnet18 32x32": {"model": "resnet18"},
        # search_spaces/report/resnet18.yaml upsamples to ImageNet's 224x224: time that too.
        "resnet18 224x224": {"model": "resnet18", "input_size": 224},
    }
    rows, seconds = [], {}
    for label, fields in models.items():
        for precision in ("fp32", "bf16"):
            s = epoch_seconds(fields, precision, n_train, n_test, steps, batch)
            seconds[(label, precision)] = s
            rows.append({"what": f"{label} epoch, {precision}", "value": f"{s:.2f} s"})
    with tempfile.TemporaryDirectory() as tmp:
        one = packed_throughput(1, 1 if not args.smoke else 0, n_train, 2, steps, tmp)
        four = packed_throughput(4, 0.25 if not args.smoke else 0, n_train, 2, steps, tmp)
    rows.append({"what": "cnn 128, 1 trial on the GPU", "value": f"{one:,.0f} images/s"})
    rows.append(
        {
            "what": "cnn 128, 4 trials packed (0.25 GPU each)",
            "value": f"{four:,.0f} images/s in all ({four / one:.2f}x)",
        }
    )

    # Upper bound for search_spaces/report/: every trial to max_t (ASHA only shortens it),
    # one trial at a time, at the measured bf16 epoch time of the nearest measured model.
    from study.space import load_spec

    root = os.path.join(ROOT, "search_spaces", "report")
    total = 0.0
    for name in sorted(os.listdir(root)):
        spec = load_spec(os.path.join(root, name))
        per_epoch = seconds[("resnet18 224x224" if "resnet" in name else "cnn 128", "bf16")]
        total += spec.num_trials() * spec.max_epochs() * per_epoch
    rows.append(
        {"what": "report set, every trial to max_t, one at a time (upper bound)", "value": f"{total / 3600:.2f} h"}
    )
    # ResNet18 is judged at 224x224, the size search_spaces/report/resnet18.yaml trains at.
    cnn_s, res_s = seconds[("cnn 128", "bf16")], seconds[("resnet18 224x224", "bf16")]
    goal = Goal(
        id="gpu-epoch",
        name="bf16 epoch on the GPU",
        target="CNN-128 < 1 s, ResNet18 (224x224) < 5 s, on an H200",
        figure=f"CNN-128 {cnn_s:.2f} s, ResNet18 {res_s:.2f} s",
        measured={
            "cnn_128_epoch_s": round(cnn_s, 2),
            "resnet18_224_epoch_s": round(res_s, 2),
            "resnet18_32_epoch_s": round(seconds[("resnet18 32x32", "bf16")], 2),
            "cnn_128_packed_4_speedup": round(four / one, 2),
            "report_set_upper_bound_h": round(total / 3600, 2),
        },
        verdict=met(cnn_s < 1 and res_s < 5),
    )
    notes = (
        "Synthetic CIFAR-sized data (50k train / 10k test, 32x32x3; 10 classes, which changes only the last "
        "layer), batch 256, flip+crop, channels_last and cudnn.benchmark on. Epoch = measured train steps "
        "scaled to 196 steps + the full evaluation. The report-set estimate scales the CNN 128 and ResNet18 "
        "(32x32) epochs to every file; wider CNNs, the MLP and ResNet18 at 224x224 differ."
    )
    record("gpu", "GPU epoch times and packing", [goal], rows, notes, args.out)


if __name__ == "__main__":
    main()
