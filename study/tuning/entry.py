"""Tune's entry point for a trial, in a module that imports nothing.

The driver hands Tune this function by name; each worker imports this module, then
`study.tuning.trainable` (torch, the models) when it runs its first trial. So the driver never imports
torch, and a worker imports neither the driver's Tune setup (`study.tuning.tuner`, with Optuna) nor
anything else it does not use.
"""

from __future__ import annotations

from typing import Any


def train_trial(
    config: dict[str, Any],
    experiment_path: str | None = None,
    keep: int | None = None,
    stop_epochs: tuple[int, ...] = (),
    trust: bool = False,
) -> None:
    """`study.tuning.trainable.train_trial`: train one trial, reporting once per epoch."""
    from study.tuning.trainable import train_trial as train

    train(config, experiment_path, keep, tuple(stop_epochs), trust)
