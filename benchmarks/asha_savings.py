"""What ASHA saves. One fixed study on digits, run with ASHA and with FIFO to max_t.

CNN widths x learning rates: --samples trials (16) drawn by a seeded random search, so both runs
train the same configurations, each up to max_t epochs. Target: ASHA spends <= 40% of FIFO's
trial-epochs, and the test_acc of its best trial (chosen on val_acc, as `study export` chooses)
is within 1 point of FIFO's.

    python -m benchmarks.asha_savings [--max-t 8] [--samples 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from benchmarks.common import Goal, add_out_option, met, record, run_study, write_space

SPACE = """
name: asha_savings
dataset: digits
num_samples: {samples}
scheduler: {{type: asha, max_t: {max_t}, grace_period: 1, reduction_factor: 4}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
space:
  channels: {{choice: [16, 32, 64]}}
  lr: {{loguniform: [0.0001, 0.01]}}
  epochs: {max_t}
  model: cnn
  fc_width: 256
  batch_size: 64
  optimizer: adam
  seed: 0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-t", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="trials (random-search samples)")
    add_out_option(parser)
    args = parser.parse_args()

    from study.analysis.load import load_experiment
    from study.analysis.tables import best_trials, compute
    from study.analysis.trials import trial_summary

    rows, configs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        space = write_space(os.path.join(tmp, "space.yaml"), SPACE.format(max_t=args.max_t, samples=args.samples))
        for scheduler in ("asha", "fifo"):
            wall, _ = run_study(
                ["run", space, "--scheduler", scheduler, "--storage-path", tmp, "--name", scheduler],
                os.path.join(tmp, f"{scheduler}.log"),
            )
            frame = load_experiment(os.path.join(tmp, scheduler))
            trials = trial_summary(frame)
            configs[scheduler] = sorted(zip(trials["config_channels"], trials["config_lr"].round(8), strict=True))
            best = trials.set_index("trial_dir").loc[best_trials(frame, top=1)["trial_dir"].iloc[0]]
            c = compute(frame).iloc[0]
            rows[scheduler] = {
                "scheduler": scheduler,
                "trials": int(c["trials"]),
                "trial-epochs": int(c["trial_epochs"]),
                "best test_acc": f"{best['final_test_acc']:.4f}",  # the val-chosen trial's, at its last epoch
                "best trial": f"channels={best['config_channels']}, lr={best['config_lr']}",
                "wall s": f"{wall:.0f}",
                "trial-phase wall s": f"{c['wall_time_s']:.0f}",
                "summed epoch_time_s": f"{frame['epoch_time_s'].sum():.0f}",
            }
    assert configs["asha"] == configs["fifo"], "the two runs drew different configurations"
    share = rows["asha"]["trial-epochs"] / rows["fifo"]["trial-epochs"]
    gap = float(rows["fifo"]["best test_acc"]) - float(rows["asha"]["best test_acc"])

    def ratio(column: str) -> float:
        return float(rows["asha"][column]) / float(rows["fifo"][column])

    wall, phase, compute_share = ratio("wall s"), ratio("trial-phase wall s"), ratio("summed epoch_time_s")
    goals = [
        Goal(
            id="asha-epochs",
            name="ASHA's trial-epochs and best trial",
            target="<= 40% of FIFO's trial-epochs, best test_acc within 1 point",
            figure=f"{share:.0%} ({rows['asha']['trial-epochs']} of {rows['fifo']['trial-epochs']}), "
            f"best {100 * gap:.2f} points below",
            measured={
                "asha_trial_epochs": rows["asha"]["trial-epochs"],
                "fifo_trial_epochs": rows["fifo"]["trial-epochs"],
                "best_test_acc_gap_points": round(100 * gap, 2),
            },
            verdict=met(share <= 0.40 and gap <= 0.01),
        ),
        Goal(
            id="asha-wall",
            name=f"ASHA wall / FIFO wall, {args.samples} trials",
            target=f"<= trial-epoch share + 0.10 ({share + 0.10:.2f})",
            figure=f"{wall:.2f} ({rows['asha']['wall s']} s / {rows['fifo']['wall s']} s)",
            measured={
                "wall_ratio": round(wall, 2),
                "trial_span_ratio": round(phase, 2),
                "summed_epoch_time_ratio": round(compute_share, 2),
            },
            verdict=met(wall <= share + 0.10),
        ),
    ]
    notes = (
        f"digits (1212 train, 135 validation / 450 test), {args.samples} trials: cnn channels from {{16, 32, 64}} x Adam lr "
        f"log-uniform in [1e-4, 1e-2] (random search, seed 0: the same {args.samples} configurations in both runs), fc 256, batch 64, "
        f"seed 0, max_t {args.max_t}; ASHA grace 1, reduction factor 4 (Ray's default); 1 CPU per trial, 2 at once."
    )
    record("asha_savings", "ASHA savings", goals, list(rows.values()), notes, args.out)


if __name__ == "__main__":
    main()
