"""What a running study prints: trial-epochs done and an ETA beside Ray's status table, or with
`--quiet`, one line per trial as it ends instead of the table."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class EtaCallback(Callback):
    """Counts trial-epochs against the plan and estimates the time left.

    The plan starts as trials x max_t and shrinks whenever a trial ends early (ASHA stop,
    divergence), so the ETA is an upper bound that tightens as ASHA prunes. It assumes the
    current rate of epochs per second holds.

    Args:
        planned_trials: trials Tune will run (None for an open-ended search).
        max_t: epochs a trial may reach.
        every_s: seconds between progress lines.
    """

    def __init__(self, planned_trials: int | None, max_t: int, every_s: float = 15.0) -> None:
        self.planned = planned_trials * max_t if planned_trials else None
        self.trials = planned_trials
        self.max_t = max_t
        self.every_s = every_s
        self.done = 0
        self.done_at_start = 0
        self.start = time.monotonic()
        self.last_print = self.start
        self.epochs_of: dict[str, int] = {}

    def setup(self, **info: Any) -> None:
        """Tune calls this when the run starts, and again when a restored run restarts."""
        self.start = self.last_print = time.monotonic()
        self.done_at_start = self.done  # a restored run keeps its count; the rate starts afresh
        total = info.get("total_num_samples")
        if self.planned is not None and self.trials and total and total > self.trials:  # a grown search
            self.planned += (total - self.trials) * self.max_t
            self.trials = total

    def get_state(self) -> dict[str, Any]:
        """Saved with Tune's experiment state, so a resumed study's count and plan go on."""
        return {"done": self.done, "planned": self.planned, "trials": self.trials, "epochs_of": dict(self.epochs_of)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.done, self.planned, self.epochs_of = state["done"], state["planned"], dict(state["epochs_of"])
        self.trials = state.get("trials", self.trials)  # absent in the state of older studies

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = int(result.get("epoch", 0))
        previous = self.epochs_of.get(trial.trial_id, epoch - 1)
        self.done += max(0, epoch - previous)
        self.epochs_of[trial.trial_id] = epoch
        now = time.monotonic()
        if now - self.last_print >= self.every_s:
            self.last_print = now
            print(self.line(now), file=sys.stdout, flush=True)  # looked up now: the Tuner pickles callbacks

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.planned is not None:
            self.planned -= self.max_t - self.epochs_of.get(trial.trial_id, 0)  # epochs ASHA saved

    def line(self, now: float) -> str:
        elapsed = now - self.start
        text = f"[study] {self.done} trial-epochs done"
        if self.planned:
            text += f" of at most {self.planned}"
            if self.done > self.done_at_start:
                left = elapsed / (self.done - self.done_at_start) * max(0, self.planned - self.done)
                text += f", elapsed {format_seconds(elapsed)}, ETA <= {format_seconds(left)}"
        return text


class TrialEndLines(Callback):
    """--quiet: one line per trial as it ends (its name, epochs, the metric), in place of Ray's
    status table, for logs and job schedulers.

    Args:
        metric: the study's metric, shown at the trial's last epoch.
        planned_trials: trials in the study, for "k of N ended".
    """

    def __init__(self, metric: str, planned_trials: int) -> None:
        self.metric, self.planned = metric, planned_trials

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.say(trials, trial, "ended")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.say(trials, trial, "failed")

    def say(self, trials: list, trial: Any, how: str) -> None:
        result = trial.last_result or {}
        value = result.get(self.metric)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, int | float) else f"no {self.metric}"
        ended = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)  # it, and those before
        print(
            f"[study] {trial} {how} after {result.get('epoch', 0)} epoch(s), {shown} ({ended} of {self.planned} ended)",
            flush=True,
        )
