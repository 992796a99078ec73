"""Import what the tables and plots need while the study's last trials run, on the core they leave idle."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial


def import_tables() -> None:
    """The imports `study run` makes for its tables and plots (scipy.stats, matplotlib): about
    1.3 s on the 2-core machine (measured 2026-12-01), paid here instead of after the trials."""
    from study.analysis import summarize_experiments  # noqa: F401  (pandas, scipy.stats)
    from study.analysis.plots import pyplot

    pyplot()


class WarmTables(Callback):
    """Once every planned trial has started and one has ended, no trial will take its place: from
    then on a slot stays idle while the last trials finish (ASHA's tail). That is when the tables'
    imports run, in a thread of the driver, so the tables follow the last trial sooner.

    Nothing runs before then (the imports would take a core from a trial), nor more than once.
    A failed import is left for the tables to raise in the main thread, as without this.
    """

    def __init__(self, planned_trials: int, warm: Callable[[], None] = import_tables) -> None:
        self.planned = planned_trials
        self.warm = warm
        self.started = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.started or len(trials) < self.planned or any(t.status == Trial.PENDING for t in trials):
            return
        self.started = True
        # Not a daemon: an exit right after the trials (a signal) waits for the imports to finish
        # rather than stopping the interpreter in the middle of one.
        threading.Thread(target=self.run, name="warm-tables").start()

    def run(self) -> None:
        try:
            self.warm()
        except Exception:  # noqa: BLE001  (the tables import again and report it)
            pass

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state; a restored run warms up again."""
        return {**self.__dict__, "started": False}
