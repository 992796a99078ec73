"""Checkpoint writing as a share of epoch time, with `checkpoint_every: 1` and with 0 (auto).

A checkpoint that is expensive next to an epoch is the case the auto policy is for: the report's
widest CNN (conv width 1024, FC 4096: about 2 GB with Adam's state) on epochs cut short
(`max_steps_per_epoch`, a few images), so that one write costs a large part of an epoch, as
it would for a fast GPU epoch. The two trials run at once, 1 CPU each, the same seed and
epochs; each reports `checkpoint_s` (the write to local disk) and `epoch_time_s` (train and
evaluation). Target: writing <= 5% of epoch time.

    python -m benchmarks.checkpoint_policy [--epochs 14 --channels 1024]
"""

from __future__ import annotations

import argparse

from benchmarks.common import Goal, add_out_option, met, record, run_space

SPACE = """
name: checkpoint_policy
dataset: synthetic
scheduler: {{type: fifo}}
resources: {{cpu: 1}}
keep_checkpoints: 1
space:
  checkpoint_every: {{grid: [1, 0]}}
  num_train: 64
  num_test: 16
  epochs: {epochs}
  max_steps_per_epoch: 1
  batch_size: {batch}
  eval_batch_size: 16
  model: cnn
  channels: {channels}
  fc_width: 4096
  seed: 0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    add_out_option(parser)
    args = parser.parse_args()
    trials = run_space(SPACE.format(**vars(args)))
    rows, shares = [], {}
    for results in trials.values():
        every = results[0]["config"]["checkpoint_every"]
        saved = [r["epoch"] for r in results if "checkpoint_s" in r]
        probe_s = sum(r.get("checkpoint_probe_s", 0.0) for r in results)  # auto's first-trial disk probe
        write_s = sum(r.get("checkpoint_s", 0.0) for r in results) + probe_s
        epoch_s = sum(r["epoch_time_s"] for r in results)
        shares[every] = write_s / epoch_s
        rows.append(
            {
                "checkpoint_every": f"{every}{' (auto)' if every == 0 else ''}",
                "epochs": len(results),
                "epochs checkpointed": ", ".join(map(str, saved)),
                "checkpoint MB": f"{max(r.get('checkpoint_mb', 0.0) for r in results):,.0f}",
                "write s (sum, probe incl.)": f"{write_s:.2f}",
                "probe s": f"{probe_s:.2f}",
                "epoch s (sum)": f"{epoch_s:.1f}",
                "write / epoch time": f"{shares[every]:.1%}",
            }
        )
    goal = Goal(
        id="checkpoint-share",
        name="checkpoint writing, checkpoint_every 0 (auto)",
        target="<= 5% of epoch time",
        figure=f"{shares[0]:.1%} auto ({shares[1]:.1%} every epoch)",
        measured={
            "auto_write_share_percent": round(100 * shares[0], 1),
            "every_epoch_write_share_percent": round(100 * shares[1], 1),
        },
        verdict=met(shares[0] <= 0.05),
    )
    notes = (
        f"cnn {args.channels} / FC 4096 with Adam, synthetic data, epochs of 1 step of {args.batch} images "
        f"and evaluation of 16 + 64 images, {args.epochs} epochs, both trials at once (1 CPU each), "
        "local disk. `checkpoint_s` is the trainer's torch.save, plus auto's probe (`checkpoint_probe_s`, a torch.save "
        "of at most 64 MiB, once per worker process); Tune's copy of the folder to storage is not in it."
    )
    record("checkpoint_policy", "Checkpoint policy: writing as a share of epoch time", [goal], rows, notes, args.out)


if __name__ == "__main__":
    main()
